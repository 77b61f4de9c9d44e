// The REST API as the dashboard uses it. Every request has a timeout: a hung poll must never stall
// the loop that keeps the screen current. A write a user asked for carries an Idempotency-Key made
// once for that action; when its answer is lost (timeout, no connection, 5xx) it is sent again with
// the same key, so the server does it once and the retry gets the first answer.

export const API_PREFIX = "/api/v1";
const TIMEOUT_MS = 10_000;
const RETRY_DELAYS_MS = [500, 2_000];

/** A fresh key for one user action; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function newIdempotencyKey(crypto = globalThis.crypto) {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const retryable = (error) => error instanceof ApiError && (error.status === 0 || error.status >= 500);

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && typeof d.msg === "string" ? d.msg : JSON.stringify(d))).join("; ");
  }
  return detail === undefined ? "" : JSON.stringify(detail);
}

export class Api {
  /** `token()` returns the current API token (or null); `onUnauthorized()` is called on a 401. */
  constructor({
    token = () => null,
    onUnauthorized = () => {},
    base = API_PREFIX,
    fetchImpl = globalThis.fetch.bind(globalThis),
    retryDelaysMs = RETRY_DELAYS_MS,
  } = {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
    this.base = base;
    this.fetch = fetchImpl;
    this.retryDelaysMs = retryDelaysMs;
  }

  /** One user action's write: one key, sent again on each retry of a lost answer. */
  async write(method, path, body) {
    const idempotencyKey = newIdempotencyKey();
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.request(method, path, body, { idempotencyKey });
      } catch (error) {
        if (!retryable(error) || attempt >= this.retryDelaysMs.length) throw error;
        await new Promise((resolve) => setTimeout(resolve, this.retryDelaysMs[attempt]));
      }
    }
  }

  async request(
    method,
    path,
    body = undefined,
    { auth = true, timeoutMs = TIMEOUT_MS, idempotencyKey = null, token: given = null } = {},
  ) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
    const token = auth ? (given ?? this.token()) : null;
    if (token) headers.authorization = `Bearer ${token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let response;
    try {
      response = await this.fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError(0, controller.signal.aborted ? "the server did not answer in time" : "cannot reach the server");
    } finally {
      clearTimeout(timer);
    }
    let payload = null;
    const type = response.headers.get("content-type") ?? "";
    if (response.status !== 204 && type.includes("application/json")) {
      try {
        payload = await response.json();
      } catch {
        payload = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, describe(payload?.detail) || `HTTP ${response.status}`);
      if (response.status === 401 && auth) this.onUnauthorized(error);
      throw error;
    }
    return payload;
  }

  config() {
    return this.request("GET", "/config", undefined, { auth: false });
  }

  login(email, password) {
    return this.request("POST", "/auth/login", { email, password }, { auth: false });
  }

  /** The restaurants a just-signed-in user may watch, with the token of that sign-in. */
  restaurants(token) {
    return this.request("GET", "/restaurants?limit=500", undefined, { token }); // a page: {data, count}
  }

  mqttToken() {
    return this.request("POST", "/auth/mqtt-token");
  }

  snapshot(rid) {
    return this.request("GET", `/restaurants/${rid}/dashboard`);
  }

  eventsAfter(rid, after, limit = 100) {
    return this.request("GET", `/restaurants/${rid}/events?after=${encodeURIComponent(after)}&limit=${limit}`);
  }

  setStatus(rid, orderId, status) {
    return this.write("POST", `/restaurants/${rid}/orders/${orderId}/status`, { status });
  }

  refund(rid, orderId, amountCents, reason) {
    return this.write("POST", `/restaurants/${rid}/orders/${orderId}/refunds`, { amount_cents: amountCents, reason });
  }

  /** Staff say the order was paid: it becomes refundable (409 when paid already or cancelled). */
  pay(rid, orderId) {
    return this.write("POST", `/restaurants/${rid}/orders/${orderId}/pay`);
  }

  /** The order's refunds, oldest first: a page {data, count}. */
  refunds(rid, orderId) {
    return this.request("GET", `/restaurants/${rid}/orders/${orderId}/refunds?limit=500`);
  }

  markRead(rid, notificationId) {
    return this.request("POST", `/restaurants/${rid}/notifications/${notificationId}/read`);
  }

  /** Every unread notification up to `upTo` (the newest on the screen): one arriving meanwhile stays unread. */
  markAllRead(rid, upTo) {
    return this.request("POST", `/restaurants/${rid}/notifications/read-all?up_to=${encodeURIComponent(upTo)}`);
  }
}
