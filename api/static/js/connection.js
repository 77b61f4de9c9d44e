// The dashboard's connection to the bus: MQTT over WebSocket for live events, the REST catch-up
// endpoint for everything missed, polling while the broker cannot be reached.
//
//   connecting → catching-up → live ⇄ (reconnecting | polling | offline) ; refused ; stopped
//
// - Reconnects itself (MQTT.js's own reconnect is off), exponential backoff with jitter, capped; the
//   attempt count is reset only after a connection stayed up for `stableMs`, so a broker that accepts
//   and then drops a connection cannot drive a tight loop.
// - After every (re)connect: subscribe, hold live events, fetch `events?after=lastSeq` until the end,
//   then release the held events in seq order. Only then is the screen "live".
// - While disconnected, the same catch-up runs every few seconds (polling).
// - A 410 from the catch-up (the events missed were pruned after the retention period) replaces the
//   picture with a fresh snapshot and goes on from its seq.
// - The MQTT token is renewed at 80 % of its lifetime by reconnecting with the new one; the
//   catch-up covers the moment between the two connections.
// - A token the broker refuses (CONNACK 4/5) is retried once with a freshly minted token, then the
//   connection stops ("refused") until the user signs in again; polling keeps the screen current.

import { backoffDelay, jittered } from "./backoff.js";
import { Sequencer, classifyTopic, parseJson, validateEnvelope } from "./events.js";

export const CATCH_UP_LIMIT = 100;
const CATCH_UP_PAGES = 50;
const REFUSED_CODES = new Set([2, 4, 5]); // identifier rejected, bad user name or password, not authorized

export function subscriptionFilters(rid) {
  const base = `restaurant/${rid}`;
  return [
    `${base}/orders`,
    `${base}/orders/open/+`,
    `${base}/inventory`,
    `${base}/inventory/low_stock`,
    `${base}/inventory/items/+`,
    `${base}/menu`,
    `${base}/categories`,
    `${base}/notifications`,
    `${base}/devices/+/status`,
  ];
}

/** A random id for this tab: several tabs of one user connect at once, each with its own client id. */
export function randomTabId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function websocketUrl(config, location = globalThis.location) {
  if (config.ws_url) return config.ws_url; // the deployment's public URL (a NATS node's WebSocket listener)
  const secure = location.protocol === "https:" && Number.isInteger(config.wss_port);
  const port = secure ? config.wss_port : config.ws_port;
  return `${secure ? "wss" : "ws"}://${location.hostname}:${port}${config.ws_path ?? "/mqtt"}`;
}

/**
 * SUBACK return codes per filter, from MQTT.js's subscribe callback: it reports any refused filter
 * (0x80) as an error carrying the SUBACK packet. Null when there is no SUBACK (a real failure).
 */
export function grantedCodes(filters, error) {
  if (!error) return filters.map(() => 0);
  const granted = error.packet?.granted;
  return Array.isArray(granted) && granted.length === filters.length ? granted : null;
}

const DEFAULTS = {
  pollMs: 3000,
  stableMs: 10_000,
  refreshFraction: 0.8,
  failuresBeforePolling: 2,
  connectTimeoutMs: 10_000,
  keepaliveSeconds: 30,
  baseMs: 500,
  capMs: 30_000,
};

export class LiveConnection {
  /**
   * `sink` receives everything: snapshot(s), event(envelope, source), orderState(id, env|null),
   * itemState(id, env|null), presence(deviceId, value|null), ignored(reason, topic), state(info).
   */
  constructor({ mqtt, api, rid, wsUrl, tabId = randomTabId(), sink, options = {} }) {
    this.mqtt = mqtt;
    this.api = api;
    this.rid = rid;
    this.wsUrl = wsUrl;
    this.tabId = tabId;
    this.sink = sink;
    this.options = { ...DEFAULTS, ...options };
    this.sequencer = new Sequencer({ apply: (envelope, source) => this.sink.event(envelope, source) });
    this.generation = 0;
    this.client = null;
    this.connected = false;
    this.live = false;
    this.everLive = false;
    this.connectedAt = 0;
    this.attempts = 0; // reconnect attempts since the last stable connection (drives the backoff)
    this.failures = 0; // consecutive connection attempts that did not get live
    this.token = null;
    this.refused = false;
    this.retriedRefusal = false;
    this.renewing = false;
    this.stopped = false;
    this.lastPollOk = null;
    this.lastError = "";
    this.deniedFilters = [];
    this.nextAttemptAt = 0;
    this.timers = { reconnect: null, poll: null, refresh: null };
    this.catchUpPromise = null;
    this.catchUpAgain = false;
    this.snapshotPromise = null;
    this.stateName = "";
    this.history = [];
    this._onOnline = () => this.nudge("network is back");
    this._onVisible = () => {
      if (document.visibilityState === "visible") this.nudge("tab is visible");
    };
  }

  get clientId() {
    return this.token ? `${this.token.prefix}:${this.tabId}` : `?:${this.tabId}`;
  }

  start() {
    this._report();
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.document?.addEventListener("visibilitychange", this._onVisible);
    this.ensureSnapshot().catch((error) => {
      this.lastError = `cannot load the current state: ${error.message}`;
      this._startPolling();
      this._report();
    });
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.generation += 1;
    for (const name of Object.keys(this.timers)) this._clear(name);
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.document?.removeEventListener("visibilitychange", this._onVisible);
    const client = this.client;
    this.client = null;
    this.connected = this.live = false;
    if (client) client.end(true);
    this._report();
  }

  /** Reconnect now instead of waiting out the backoff (the network came back, the tab became visible). */
  nudge(reason) {
    if (this.stopped || this.refused || this.connected || this.timers.reconnect === null) return;
    if (this.nextAttemptAt - Date.now() < 1000) return;
    console.info(`orderbus: ${reason}; reconnecting now`);
    this._clear("reconnect");
    this.connect();
  }

  // --- snapshot and catch-up ------------------------------------------------------------------

  ensureSnapshot() {
    if (this.sequencer.lastSeq !== null) return Promise.resolve();
    if (this.snapshotPromise) return this.snapshotPromise;
    this.snapshotPromise = (async () => {
      try {
        const snapshot = await this.api.snapshot(this.rid);
        if (this.sequencer.lastSeq === null) {
          this.sink.snapshot(snapshot);
          this.sequencer.baseline(Number.isInteger(snapshot?.seq) ? snapshot.seq : 0);
        }
      } finally {
        this.snapshotPromise = null;
      }
    })();
    return this.snapshotPromise;
  }

  /** Fetch every event after the last applied seq (one at a time; a request meanwhile runs it again). */
  catchUp() {
    if (this.catchUpPromise) {
      this.catchUpAgain = true;
      return this.catchUpPromise;
    }
    this.catchUpPromise = (async () => {
      try {
        let rounds = 0;
        do {
          this.catchUpAgain = false;
          await this._catchUpOnce();
          rounds += 1;
        } while ((this.catchUpAgain || this.sequencer.needsCatchUp()) && rounds < 5 && !this.stopped);
        this.lastPollOk = true;
      } catch (error) {
        this.lastPollOk = false;
        this.lastError = error.message;
        throw error;
      } finally {
        this.catchUpPromise = null;
      }
    })();
    return this.catchUpPromise;
  }

  async _catchUpOnce() {
    await this.ensureSnapshot();
    const { after, tick } = this.sequencer.beginCatchUp();
    let complete = false;
    let pruned = false;
    try {
      let cursor = after;
      for (let page = 0; page < CATCH_UP_PAGES; page += 1) {
        let list;
        try {
          list = await this.api.eventsAfter(this.rid, cursor, CATCH_UP_LIMIT);
        } catch (error) {
          if (error.status !== 410) throw error;
          pruned = true; // the events we miss are no longer kept: start again from a snapshot
          break;
        }
        if (!Array.isArray(list)) throw new Error("the events endpoint did not answer a list");
        const valid = [];
        for (const item of list) {
          const checked = validateEnvelope(item, this.rid);
          if (checked.ok) valid.push(checked.envelope);
          else this.sink.ignored(`catchup_${checked.reason}`, "events endpoint");
        }
        this.sequencer.acceptCatchUp(valid);
        if (list.length < CATCH_UP_LIMIT) {
          complete = true;
          break;
        }
        cursor = Math.max(cursor, ...valid.map((e) => e.seq), this.sequencer.lastSeq ?? 0);
      }
    } finally {
      const dropped = this.sequencer.endCatchUp({ complete, startedTick: tick });
      for (let i = 0; i < dropped; i += 1) this.sink.ignored("unconfirmed_seq", "live");
    }
    if (pruned) await this.reloadSnapshot();
  }

  /** The whole picture again, replacing the old one; then the events after its seq (next round). */
  async reloadSnapshot() {
    const snapshot = await this.api.snapshot(this.rid);
    if (!Number.isInteger(snapshot?.seq)) throw new Error("the snapshot has no seq");
    this.sink.snapshot(snapshot, { replace: true });
    this.sequencer.baseline(snapshot.seq);
    this.catchUpAgain = true;
  }

  // --- MQTT -------------------------------------------------------------------------------------

  async ensureToken() {
    const now = Date.now();
    if (this.token && this.token.expiresAt - now > 0.2 * this.token.ttlMs) return this.token;
    const answer = await this.api.mqttToken();
    if (!answer || typeof answer.token !== "string" || typeof answer.client_id_prefix !== "string") {
      throw new Error("the API answered no MQTT token");
    }
    const ttlMs = Math.max(1, Number(answer.expires_in) || 60) * 1000;
    this.token = { value: answer.token, prefix: answer.client_id_prefix, ttlMs, mintedAt: now, expiresAt: now + ttlMs };
    return this.token;
  }

  async connect() {
    if (this.stopped || this.refused) return;
    this._clear("reconnect");
    const gen = ++this.generation;
    this._report();
    let token;
    try {
      token = await this.ensureToken();
    } catch (error) {
      if (gen !== this.generation || this.stopped) return;
      this.lastError = `no MQTT token: ${error.message}`;
      if (error.status === 401) return; // signed out: the app takes over
      this._failed();
      return;
    }
    if (gen !== this.generation || this.stopped) return;
    let client;
    try {
      client = this.mqtt.connect(this.wsUrl, {
        clientId: `${token.prefix}:${this.tabId}`,
        username: token.prefix,
        password: token.value,
        clean: true,
        keepalive: this.options.keepaliveSeconds,
        reconnectPeriod: 0,
        connectTimeout: this.options.connectTimeoutMs,
        protocolVersion: 4,
        resubscribe: false,
      });
    } catch (error) {
      this.lastError = `cannot open the WebSocket: ${error.message}`;
      this._failed();
      return;
    }
    this.client = client;
    const usedToken = token;
    client.on("connect", () => this._onConnect(gen, client));
    client.on("message", (topic, payload, packet) => {
      if (gen === this.generation) this._onMessage(topic, payload, packet?.retain === true);
    });
    client.on("error", (error) => this._onError(gen, client, error, usedToken));
    client.on("close", () => this._onClose(gen, client));
  }

  _onConnect(gen, client) {
    if (gen !== this.generation || this.stopped) {
      client.end(true);
      return;
    }
    this.connected = true;
    this.connectedAt = Date.now();
    this.retriedRefusal = false;
    this.lastError = "";
    this.sequencer.holding = true; // live events wait until the catch-up after SUBACK
    this._report();
    const filters = subscriptionFilters(this.rid);
    client.subscribe(filters, { qos: 0 }, (error) => {
      if (gen !== this.generation) return;
      const codes = grantedCodes(filters, error);
      if (codes === null) {
        this.lastError = `subscribe failed: ${error.message}`;
        client.end(true);
        return;
      }
      // a refused filter (SUBACK 0x80) costs that part of the picture, not the connection
      this.deniedFilters = filters.filter((_, i) => codes[i] & 0x80);
      if (this.deniedFilters.length) console.warn("orderbus: subscriptions refused", this.deniedFilters);
      this.catchUp().then(
        () => {
          if (gen !== this.generation || !this.connected) return;
          this.live = this.everLive = true;
          this.renewing = false;
          this.failures = 0;
          this._clear("poll");
          this._scheduleRefresh(gen);
          this._report();
        },
        () => {
          // the API is unreachable: stay connected (events keep arriving, held) and try again
          if (gen !== this.generation || !this.connected) return;
          this._report();
          setTimeout(() => {
            if (gen === this.generation && this.connected && !this.live) this._onConnectRetryCatchUp(gen);
          }, jittered(this.options.pollMs));
        },
      );
    });
  }

  _onConnectRetryCatchUp(gen) {
    this.catchUp().then(
      () => {
        if (gen !== this.generation || !this.connected) return;
        this.live = this.everLive = true;
        this.renewing = false;
        this.failures = 0;
        this._clear("poll");
        this._scheduleRefresh(gen);
        this._report();
      },
      () => {
        if (gen !== this.generation || !this.connected) return;
        this._report();
        setTimeout(() => this._onConnectRetryCatchUp(gen), jittered(this.options.pollMs));
      },
    );
  }

  _onMessage(topic, payload, retained) {
    const where = classifyTopic(topic, this.rid);
    if (where === null) {
      this.sink.ignored("unexpected_topic", topic);
      return;
    }
    const empty = !payload || payload.length === 0;
    if (where.kind === "presence") {
      if (empty) {
        this.sink.presence(where.id, null);
        return;
      }
      const parsed = parseJson(payload);
      if (!parsed.ok) this.sink.ignored(parsed.reason, topic);
      else this.sink.presence(where.id, parsed.value);
      return;
    }
    if (where.kind === "order_state" || where.kind === "item_state") {
      const apply = where.kind === "order_state" ? this.sink.orderState : this.sink.itemState;
      if (empty) {
        apply.call(this.sink, where.id, null);
        return;
      }
      const parsed = parseJson(payload);
      const checked = parsed.ok ? validateEnvelope(parsed.value, this.rid) : parsed;
      if (!checked.ok) this.sink.ignored(checked.reason, topic);
      else apply.call(this.sink, where.id, checked.envelope);
      return;
    }
    const parsed = parseJson(payload);
    const checked = parsed.ok ? validateEnvelope(parsed.value, this.rid) : parsed;
    if (!checked.ok) {
      this.sink.ignored(checked.reason, topic);
      return;
    }
    this.sequencer.offer(checked.envelope, retained ? "retained" : "live");
    if (this.sequencer.needsCatchUp()) {
      this.catchUp().catch(() => {}); // a gap: fetch it; failures are retried by the next gap or poll
    }
  }

  _onError(gen, client, error, usedToken) {
    if (gen !== this.generation) return;
    this.lastError = error?.message ?? String(error);
    if (!REFUSED_CODES.has(error?.code)) return; // transport errors are followed by "close"
    const minted = usedToken ? Date.now() - usedToken.mintedAt : Infinity;
    if (!this.retriedRefusal && minted > 30_000) {
      // maybe it expired while the machine slept: one more try with a token minted right now
      this.retriedRefusal = true;
      this.token = null;
      return;
    }
    this.refused = true;
    this.lastError = `the broker refused the token (CONNACK ${error.code})`;
    console.warn("orderbus:", this.lastError);
    this._clear("reconnect"); // MQTT.js may have reported the close first
    client.end(true);
    this._startPolling();
    this._report();
  }

  _onClose(gen, client) {
    if (gen !== this.generation) return; // superseded (a renewal, or stop)
    const wasConnected = this.connected;
    this.connected = this.live = false;
    this.client = null;
    this._clear("refresh");
    if (this.sequencer.holding && this.catchUpPromise === null) this.sequencer.endCatchUp({ complete: false });
    client.removeAllListeners?.("message");
    if (this.stopped) return;
    if (wasConnected && Date.now() - this.connectedAt >= this.options.stableMs) this.attempts = 0;
    if (this.refused) {
      this._clear("reconnect");
      this._startPolling();
      this._report();
      return;
    }
    this._failed(wasConnected);
  }

  /** A connection attempt failed or a connection ended: poll meanwhile, try again after a backoff. */
  _failed(wasConnected = false) {
    this.connected = this.live = false;
    this.renewing = false;
    if (!wasConnected) this.failures += 1;
    this._startPolling();
    this._scheduleReconnect();
    this._report();
  }

  _scheduleReconnect() {
    if (this.stopped || this.refused || this.timers.reconnect !== null) return;
    const delay = backoffDelay(this.attempts, { baseMs: this.options.baseMs, capMs: this.options.capMs });
    this.attempts += 1;
    this.nextAttemptAt = Date.now() + delay;
    this.timers.reconnect = setTimeout(() => {
      this.timers.reconnect = null;
      this.connect();
    }, delay);
  }

  _scheduleRefresh(gen) {
    this._clear("refresh");
    if (!this.token) return;
    const due = this.token.mintedAt + this.options.refreshFraction * this.token.ttlMs - Date.now();
    this.timers.refresh = setTimeout(() => this._renew(gen), Math.max(1000, due));
  }

  /** A new MQTT token before the current one expires, used by reconnecting at once. */
  async _renew(gen) {
    this.timers.refresh = null;
    if (gen !== this.generation || !this.connected || this.stopped) return;
    const previous = this.token;
    this.token = null;
    try {
      await this.ensureToken();
    } catch (error) {
      this.token = previous;
      if (error.status === 401 || gen !== this.generation) return;
      // try again before it runs out; if it does, the broker ends the connection and we reconnect
      const left = previous.expiresAt - Date.now();
      this.timers.refresh = setTimeout(() => this._renew(gen), Math.max(1000, Math.min(15_000, left / 3)));
      return;
    }
    if (gen !== this.generation || !this.connected || this.stopped) return;
    console.info("orderbus: MQTT token renewed; reconnecting with it");
    const old = this.client;
    this.renewing = true;
    this.connected = this.live = false;
    this.generation += 1; // the old client's close is no longer ours
    if (old) old.end(true);
    this.connect();
  }

  _startPolling() {
    if (this.timers.poll !== null || this.stopped) return;
    const first = this.lastPollOk === null || this.history.at(-1) === "live";
    const delay = first ? 0 : jittered(this.options.pollMs);
    this.timers.poll = setTimeout(async () => {
      this.timers.poll = null;
      if (this.live || this.stopped) return;
      try {
        await this.catchUp();
      } catch (error) {
        // reported through lastPollOk / lastError
      }
      if (this.live || this.stopped) return;
      this._report();
      this._startPolling();
    }, delay);
  }

  _clear(name) {
    if (this.timers[name] !== null) {
      clearTimeout(this.timers[name]);
      this.timers[name] = null;
    }
  }

  _state() {
    if (this.stopped) return "stopped";
    if (this.refused) return "refused";
    if (this.live || this.renewing) return "live";
    if (this.connected) return "catching-up";
    if (this.failures >= this.options.failuresBeforePolling) return this.lastPollOk === false ? "offline" : "polling";
    return this.everLive || this.failures > 0 ? "reconnecting" : "connecting";
  }

  _report() {
    const state = this._state();
    if (state !== this.stateName) {
      this.stateName = state;
      this.history.push(state);
      if (this.history.length > 50) this.history.shift();
      console.info(`orderbus: connection ${state}`);
    }
    this.sink.state({
      state,
      clientId: this.clientId,
      lastSeq: this.sequencer.lastSeq,
      nextAttemptAt: this.timers.reconnect !== null ? this.nextAttemptAt : 0,
      polling: this.timers.poll !== null || (!this.live && this.lastPollOk !== null),
      lastPollOk: this.lastPollOk,
      lastError: this.lastError,
      deniedFilters: this.deniedFilters,
      stats: { ...this.sequencer.stats },
    });
  }
}
