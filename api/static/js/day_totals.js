// The day's totals in the header: orders, revenue, refunds and net of the restaurant's business day
// (`GET /restaurants/{rid}/orders/summary`). Read again, at most once per second, whenever an order
// changes (new, status, refund) and on every snapshot; a failed read keeps the last figures shown.
// Self-contained: the app only calls `refresh()` and `stop()`.

const MIN_GAP_MS = 1_000;

function cents(value) {
  const number = Number.isInteger(value) ? value : 0;
  const sign = number < 0 ? "-" : "";
  const abs = Math.abs(number);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** The header's text for one summary answer. */
export function describeTotals(summary) {
  const orders = Number.isInteger(summary?.orders) ? summary.orders : 0;
  const day = typeof summary?.business_date === "string" ? summary.business_date : "today";
  return {
    day,
    orders: `${orders} order${orders === 1 ? "" : "s"}`,
    revenue: cents(summary?.revenue_cents),
    refunds: cents(summary?.refunds_cents),
    net: cents(summary?.net_cents),
  };
}

export class DayTotals {
  constructor(doc, api, rid) {
    this.doc = doc;
    this.api = api;
    this.rid = rid;
    this.live = true;
    this.inFlight = false;
    this.again = false;
    this.timer = null;
    this.lastAt = 0;
    this.element = doc.getElementById("day-totals");
  }

  /** Read the totals again soon: calls close together make one request. */
  refresh() {
    if (!this.live || !this.element) return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    if (this.timer !== null) return;
    const wait = Math.max(0, this.lastAt + MIN_GAP_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.load();
    }, wait);
  }

  async load() {
    this.inFlight = true;
    this.lastAt = Date.now();
    try {
      const summary = await this.api.request("GET", `/restaurants/${this.rid}/orders/summary`);
      if (this.live) this.show(summary);
    } catch (error) {
      console.warn(`orderbus: the day's totals could not be read: ${error?.message ?? error}`);
    } finally {
      this.inFlight = false;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    }
  }

  show(summary) {
    const text = describeTotals(summary);
    const set = (name, value) => {
      const node = this.element.querySelector(`[data-total="${name}"]`);
      if (node) node.textContent = value;
    };
    for (const [name, value] of Object.entries(text)) set(name, value);
    this.element.dataset.day = text.day;
    this.element.hidden = false;
  }

  stop() {
    this.live = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.element) this.element.hidden = true;
  }
}
