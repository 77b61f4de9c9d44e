// Rendering of the dashboard. Text goes in through textContent only (order notes and names are user
// input). Lists are updated in place by key, so a button keeps its focus while events arrive.

import {
  NEXT_STATUS,
  OPEN_STATUSES,
  elapsedLabel,
  filterOrders,
  formatCents,
  groupNotifications,
  isLow,
  orderLabel,
  sanitizeRefund,
  sinceMs,
} from "./state.js";

const WAITING_MS = 10 * 60_000; // an order older than this is marked waiting, twice this late
const BUTTON_TEXT = { preparing: "Start", ready: "Ready", completed: "Complete" }; // short: a compact card; NEXT_LABEL is its name
const NEXT_LABEL = { preparing: "Start preparing", ready: "Mark ready", completed: "Complete" };
const PAYMENT_LABEL = { unpaid: "unpaid", paid: "paid", partially_refunded: "part refunded", refunded: "refunded" };
const STATE_LABEL = {
  "signed-out": "Signed out",
  connecting: "Connecting…",
  "catching-up": "Catching up…",
  live: "Live",
  reconnecting: "Reconnecting…",
  polling: "Polling",
  offline: "Offline",
  refused: "Token refused",
  stopped: "Stopped",
};

/** `h("li", {class: "x", dataset: {id: 1}}, "text", child)`: a DOM element, children as text or nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setText(el, value) {
  const next = String(value ?? "");
  if (el.textContent !== next) el.textContent = next;
}

function timeOf(iso) {
  if (!iso) return "";
  const date = new Date(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  if (Number.isNaN(date.getTime())) return "";
  // no-break spaces: "07:42 PM" never wraps between the time and its AM/PM (some locales put a space in it)
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }).replace(/\s/g, "\u00a0");
}

/** A card's title: "#12 · T4", "#13 · Ana" (the full label is its tooltip and in announcements). */
function shortLabel(order) {
  const where = order.table_name ?? order.pickup_name;
  return `#${order.number ?? order.id}${where ? ` · ${where}` : ""}`;
}

/** Put `elements` into `list` in this order, moving only what is out of place; remove the rest. */
function arrange(list, elements) {
  const wanted = new Set(elements);
  for (const child of [...list.children]) if (!wanted.has(child)) child.remove();
  let cursor = list.firstElementChild;
  for (const el of elements) {
    if (el === cursor) {
      cursor = cursor.nextElementSibling;
    } else {
      list.insertBefore(el, cursor);
    }
  }
}

export class DashboardUi {
  /**
   * `actions`: advance(orderId, status), cancel(orderId), refund(orderId, cents, reason), pay(orderId, button),
   * refunds(orderId) → a page of refund records, markRead(ids), markAllRead(upTo), seen(orderId).
   * `debug` shows event numbers and the Debug link (`?debug=1`).
   */
  constructor(doc, actions, { debug = false } = {}) {
    this.doc = doc;
    this.actions = actions;
    this.debug = debug;
    this.currency = ""; // the restaurant's ISO 4217 code once its snapshot is in (setRestaurant)
    doc.body.classList.toggle("debugging", debug);
    this.$ = (id) => doc.getElementById(id);
    this.cards = new Map(); // order id -> card
    this.dismissed = new Map(); // item id -> the quantity it was dismissed at (shown again when it changes)
    this.filter = { status: "all", query: "" };
    this.state = null;
    this.role = "staff";
    this.connection = null;
    this.ticker = setInterval(() => {
      this._renderConnectionDetail();
      this._tickElapsed();
    }, 1000);
    for (const chip of this.$("status-filter").querySelectorAll("button")) {
      chip.addEventListener("click", () => this._setFilter({ status: chip.dataset.status }));
    }
    this.$("order-search").addEventListener("input", (event) => this._setFilter({ query: event.target.value }));
    this.$("mark-all-read").addEventListener("click", (event) => {
      const upTo = Number(event.currentTarget.dataset.upTo);
      if (Number.isInteger(upTo) && upTo > 0) this.actions.markAllRead(upTo, event.currentTarget);
    });
  }

  _setFilter(change) {
    this.filter = { ...this.filter, ...change };
    for (const chip of this.$("status-filter").querySelectorAll("button")) {
      chip.setAttribute("aria-pressed", String(chip.dataset.status === this.filter.status));
    }
    if (this.state) this._renderOrders(this.state);
  }

  /** Forget everything shown (sign-out). */
  reset() {
    for (const id of ["order-list", "closed-list", "alert-list", "activity-list", "notification-list", "device-list", "stock-rows"]) {
      this.$(id).replaceChildren();
    }
    delete this.$("activity-list").dataset.lastSeq;
    this.cards.clear();
    this.dismissed.clear();
    this.state = null;
    this._noteEls?.clear();
    this.$("refused-banner").hidden = true;
  }

  showLogin({ message = "", needRestaurant = false } = {}) {
    this.$("dashboard-view").hidden = true;
    this.$("session-controls").hidden = true;
    this.$("login-view").hidden = false;
    this.$("restaurant-field").hidden = !needRestaurant;
    this.$("restaurant-name").textContent = "";
    setText(this.$("login-message"), message);
    this.renderConnection({ state: "signed-out" });
    this.$(needRestaurant ? "restaurant" : "email").focus();
  }

  /** The restaurants a super admin may pick from, by name (with the id: names may repeat). */
  setRestaurantChoices(restaurants) {
    const select = this.$("restaurant");
    select.replaceChildren(
      ...restaurants.map((restaurant) => {
        const option = this.doc.createElement("option");
        option.value = String(restaurant.id);
        option.textContent = `${restaurant.name} (#${restaurant.id})`;
        return option;
      }),
    );
  }

  showDashboard({ role }) {
    this.role = role;
    this.$("login-view").hidden = true;
    this.$("dashboard-view").hidden = false;
    this.$("session-controls").hidden = false;
  }

  /** `currency`: the restaurant's ISO 4217 code, shown where staff type an amount (the refund form). */
  setRestaurant(label, currency) {
    this.currency = typeof currency === "string" && /^[A-Z]{3}$/.test(currency) ? currency : "";
    setText(this.$("restaurant-name"), label);
    this.doc.title = `${label} · orderbus`;
  }

  setSound(on) {
    const button = this.$("sound-toggle");
    button.setAttribute("aria-pressed", String(on));
    setText(button, on ? "Sound: on" : "Sound: off");
  }

  announce(text) {
    const region = this.$("announcer");
    region.textContent = "";
    setTimeout(() => {
      region.textContent = text;
    }, 50);
  }

  toast(text, { error = false } = {}) {
    const box = this.$("action-status");
    box.classList.toggle("is-error", error);
    box.textContent = text;
    clearTimeout(this._toastTimer);
    this._toastTimer = setTimeout(() => {
      box.textContent = "";
    }, 8000);
  }

  // --- connection -------------------------------------------------------------------------------

  renderConnection(info) {
    this.connection = info;
    const box = this.$("connection");
    box.dataset.state = info.state;
    setText(this.$("connection-label"), STATE_LABEL[info.state] ?? info.state);
    const banner = this.$("refused-banner");
    banner.hidden = info.state !== "refused";
    if (info.state === "refused") setText(this.$("refused-detail"), info.lastError ? `(${info.lastError}.)` : "");
    this._renderConnectionDetail();
  }

  _renderConnectionDetail() {
    const info = this.connection;
    const detail = this.$("connection-detail");
    if (!info) return;
    const parts = [];
    const wait = info.nextAttemptAt ? Math.max(0, Math.ceil((info.nextAttemptAt - Date.now()) / 1000)) : 0;
    if (info.state === "reconnecting" || info.state === "polling" || info.state === "offline") {
      if (info.nextAttemptAt) parts.push(wait > 0 ? `next try in ${wait} s` : "trying now");
      if (info.state === "polling") parts.push("checking the API every few seconds");
      if (info.state === "offline") parts.push("the server cannot be reached");
    }
    if (info.state === "refused") parts.push("checking the API every few seconds");
    if (this.debug && Number.isInteger(info.lastSeq) && info.state !== "signed-out") parts.push(`event #${info.lastSeq}`);
    setText(detail, parts.join(" · "));
    detail.title = info.lastError ?? "";
    detail.dataset.clientId = info.clientId ?? "";
  }

  // --- state --------------------------------------------------------------------------------------

  render(state, lastSeq = null) {
    this.state = state;
    if (this.connection && Number.isInteger(lastSeq) && lastSeq !== this.connection.lastSeq) {
      this.connection = { ...this.connection, lastSeq };
      this._renderConnectionDetail();
    }
    this._renderOrders(state);
    this._renderStock(state);
    this._renderDevices(state);
    this._renderNotifications(state);
    this._renderAlerts(state);
    this._renderActivity(state);
    const note = this.$("ignored-note");
    note.hidden = state.ignored.total === 0;
    const reasons = Object.entries(state.ignored.reasons).map(([reason, n]) => `${reason} ${n}`).join(", ");
    setText(note, `Ignored ${state.ignored.total} malformed message${state.ignored.total === 1 ? "" : "s"} (${reasons}).`);
    note.dataset.count = String(state.ignored.total);
  }

  _renderOrders(state) {
    const open = state.openOrders();
    const shown = filterOrders(open, this.filter);
    const list = this.$("order-list");
    const focused = this.doc.activeElement;
    for (const chip of this.$("status-filter").querySelectorAll("button")) {
      const n = chip.dataset.status === "all" ? open.length : open.filter((e) => e.order.status === chip.dataset.status).length;
      setText(chip.querySelector(".n"), n);
    }
    for (const entry of open) {
      let card = this.cards.get(entry.order.id);
      if (!card) {
        card = this._createCard(entry.order.id);
        this.cards.set(entry.order.id, card);
      }
      this._updateCard(card, entry);
    }
    const cards = shown.map((entry) => this.cards.get(entry.order.id).root);
    const openIds = new Set(open.map((entry) => entry.order.id));
    for (const [id, card] of this.cards) {
      if (!openIds.has(id)) {
        if (card.root.contains(focused)) this.$("orders-heading").focus();
        this.cards.delete(id);
      }
    }
    arrange(list, cards);
    list.dataset.shown = String(cards.length);
    setText(this.$("open-count"), open.length);
    this.$("orders-empty").hidden = open.length > 0;
    this.$("orders-none-match").hidden = open.length === 0 || cards.length > 0;
    this._tickElapsed();

    const closed = state.closedOrders();
    setText(this.$("closed-count"), closed.length);
    const closedList = this.$("closed-list");
    closedList.replaceChildren(
      ...closed.map(({ order, cleared }) => {
        const status = OPEN_STATUSES.has(order.status) && cleared ? "closed" : order.status;
        return h(
          "li",
          { dataset: { orderId: order.id, status } },
          h("span", { class: `badge status status-${status}` }, status),
          `${orderLabel(order)} · ${formatCents(order.total_cents)}`,
          order.refunded_cents ? ` · refunded ${formatCents(order.refunded_cents)}` : "",
        );
      }),
    );
  }

  _createCard(orderId) {
    const titleId = `order-${orderId}-title`;
    const title = h("h3", { id: titleId });
    const newBadge = h("span", { class: "badge badge-new" }, "New");
    const status = h("span", { class: "badge status" });
    const elapsed = h("span", { class: "elapsed", role: "timer", "aria-label": "waiting" });
    const meta = h("p", { class: "meta" });
    const lines = h("ul", { class: "lines", "aria-label": "Items" });
    const notes = h("p", { class: "order-notes" });
    const money = h("p", { class: "money" });
    const advance = h("button", { type: "button", class: "primary", dataset: { action: "advance" } });
    const cancel = h("button", { type: "button", class: "danger", dataset: { action: "cancel" } }, "Cancel");
    const amount = h("input", { type: "number", name: "amount", min: "0.01", step: "0.01", inputmode: "decimal", required: true });
    const reason = h("input", { type: "text", name: "reason", maxlength: "200" });
    const refundForm = h(
      "form",
      { class: "refund-form" },
      h("label", {}, h("span", { class: "amount-label" }, "Amount"), amount),
      h("label", {}, "Reason", reason),
      h("button", { type: "submit" }, "Refund"),
    );
    const refund = h("details", { class: "refund" }, h("summary", {}, "Refund…"), refundForm);
    const pay = h("button", { type: "button", dataset: { action: "pay" } }, "Paid");
    const payment = h("span", { class: "badge payment" });
    const refundList = h("ol", { class: "refund-list" });
    const refunds = h("details", { class: "refund-history" }, h("summary", {}, "Refunds"), refundList);
    const actions = h("div", { class: "actions" }, advance, cancel, pay, refund);
    const article = h("article", { "aria-labelledby": titleId },
      h("div", { class: "order-head" }, title, newBadge, status, elapsed), lines, notes,
      h("div", { class: "order-foot" }, money, payment, meta), refunds, actions);
    const root = h("li", { class: "order-card", dataset: { orderId } }, article);
    const card = { root, title, newBadge, status, elapsed, meta, lines, notes, money, advance, cancel, refund, amount, reason, pay, payment, refunds, refundList, key: "", createdAt: "" };

    pay.addEventListener("click", () => this.actions.pay(orderId, pay));
    refunds.addEventListener("toggle", () => {
      if (refunds.open) this._loadRefunds(card, orderId);
    });
    advance.addEventListener("click", () => {
      const next = advance.dataset.next;
      if (next) this.actions.advance(orderId, next, advance);
    });
    cancel.addEventListener("click", () => {
      if (cancel.dataset.confirm === "true") {
        cancel.dataset.confirm = "false";
        setText(cancel, "Cancel");
        this.actions.cancel(orderId, cancel);
        return;
      }
      cancel.dataset.confirm = "true";
      setText(cancel, "Confirm cancel");
      setTimeout(() => {
        cancel.dataset.confirm = "false";
        setText(cancel, "Cancel");
      }, 5000);
    });
    refundForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const cents = Math.round(Number(amount.value) * 100);
      if (!Number.isInteger(cents) || cents <= 0) {
        this.toast("Enter a refund amount above zero.", { error: true });
        amount.focus();
        return;
      }
      this.actions.refund(orderId, cents, reason.value.trim(), () => {
        amount.value = "";
        reason.value = "";
        refund.open = false;
      });
    });
    root.addEventListener("focusin", () => this.actions.seen(orderId));
    root.addEventListener("pointerdown", () => this.actions.seen(orderId));
    return card;
  }

  _updateCard(card, entry) {
    const { order } = entry;
    card.root.dataset.new = String(entry.isNew === true);
    card.newBadge.hidden = entry.isNew !== true;
    const key = `${entry.seq}:${order.version}:${order.status}`;
    if (card.key === key) return;
    card.key = key;
    card.root.dataset.status = order.status;
    card.root.dataset.seq = String(entry.seq);
    setText(card.title, shortLabel(order));
    card.title.title = `Order ${orderLabel(order)}`;
    card.createdAt = order.created_at;
    card.status.className = `badge status status-${order.status}`;
    setText(card.status, order.status);
    setText(card.meta, order.server_name ? order.server_name : "");
    card.meta.hidden = !order.server_name;
    card.elapsed.title = timeOf(order.created_at) ? `placed ${timeOf(order.created_at)}` : "";
    card.lines.replaceChildren(
      ...order.items.map((item) =>
        h(
          "li",
          {},
          `${item.quantity} × ${item.name}`,
          item.modifiers.length || item.notes
            ? h("span", { class: "mods" }, [...item.modifiers, item.notes].filter(Boolean).join(", "))
            : null,
        ),
      ),
    );
    setText(card.notes, order.notes);
    card.notes.hidden = !order.notes;
    const left = order.total_cents - order.refunded_cents;
    setText(card.money, `Total ${formatCents(order.total_cents)}${order.refunded_cents ? ` · refunded ${formatCents(order.refunded_cents)}` : ""}`);
    const next = NEXT_STATUS[order.status];
    card.advance.hidden = !next;
    card.advance.dataset.next = next ?? "";
    setText(card.advance, BUTTON_TEXT[next] ?? "");
    card.advance.setAttribute("aria-label", next ? `${NEXT_LABEL[next]}: order ${order.id}` : "");
    card.cancel.setAttribute("aria-label", `Cancel order ${order.id}`);
    const paid = order.payment_status !== "unpaid";
    const mayRefund = (this.role === "admin" || this.role === "super_admin") && left > 0 && paid;
    card.refund.hidden = !mayRefund;
    card.pay.hidden = paid || order.status === "cancelled";
    card.pay.setAttribute("aria-label", `Mark order ${order.id} paid`);
    card.root.dataset.payment = order.payment_status;
    card.payment.className = `badge payment payment-${order.payment_status}`;
    setText(card.payment, PAYMENT_LABEL[order.payment_status] ?? order.payment_status);
    card.refunds.hidden = order.refunded_cents === 0;
    if (card.refunds.open) this._loadRefunds(card, order.id); // a refund arrived while the history was open
    card.amount.max = (left / 100).toFixed(2);
    const currency = this.currency ? ` ${this.currency}` : "";
    setText(card.root.querySelector(".amount-label"), this.currency ? `Amount (${this.currency})` : "Amount");
    const inCurrency = this.currency ? ` in ${this.currency}` : "";
    card.amount.setAttribute("aria-label", `Refund amount for order ${order.id}${inCurrency}, up to ${formatCents(left)}${currency}`);
  }

  /** The order's refund history (amount, reason, who, when), read when its list is opened. */
  async _loadRefunds(card, orderId) {
    try {
      const page = await this.actions.refunds(orderId);
      const records = (Array.isArray(page?.data) ? page.data : []).map(sanitizeRefund).filter(Boolean);
      card.refundList.replaceChildren(
        ...records.map((r) =>
          h(
            "li",
            { dataset: { refundId: r.id } },
            [formatCents(r.amount_cents), r.reason, r.lines ? `${r.lines} line${r.lines === 1 ? "" : "s"}` : "", r.by, timeOf(r.created_at)]
              .filter(Boolean)
              .join(" · "),
          ),
        ),
      );
    } catch (error) {
      this.toast(`Could not read the refunds of order ${orderId}: ${error.message}`, { error: true });
    }
  }

  /** Each card's waiting time, every second: minutes and seconds, marked waiting past 10 min and late past 20. */
  _tickElapsed() {
    const now = Date.now();
    for (const card of this.cards.values()) {
      const ms = sinceMs(card.createdAt, now);
      setText(card.elapsed, ms === null ? "" : elapsedLabel(ms));
      const age = ms === null || ms < WAITING_MS ? "fresh" : ms < 2 * WAITING_MS ? "waiting" : "late";
      if (card.root.dataset.age !== age) card.root.dataset.age = age;
    }
  }

  _renderStock(state) {
    const items = state.stockItems();
    this.$("stock-empty").hidden = items.length > 0;
    this.$("stock-table").hidden = items.length === 0;
    this.$("stock-rows").replaceChildren(
      ...items.map((item) =>
        h(
          "tr",
          { dataset: { itemId: item.id, low: String(isLow(item)) } },
          h("td", {}, item.name),
          h("td", { class: "num" }, item.available_quantity ?? "–"),
          h("td", { class: "num" }, item.low_stock_threshold ?? "–"),
        ),
      ),
    );
  }

  _renderDevices(state) {
    const devices = state.deviceList();
    this.$("devices-empty").hidden = devices.length > 0;
    this.$("device-list").replaceChildren(
      ...devices.map(({ device, presence }) =>
        h(
          "li",
          { class: "device", dataset: { deviceId: device.id, presence } },
          h("span", {}, device.name, device.kind ? h("span", { class: "meta" }, ` ${device.kind}${device.station ? ` · ${device.station}` : ""}`) : null),
          h("span", { class: `presence presence-${presence}` }, device.revoked ? "revoked" : presence),
        ),
      ),
    );
  }

  _renderNotifications(state) {
    const notes = state.notificationList();
    const groups = groupNotifications(notes);
    const list = this.$("notification-list");
    const unread = notes.filter((n) => !n.read);
    this.$("notifications-empty").hidden = groups.length > 0;
    setText(this.$("unread-count"), unread.length);
    const markAll = this.$("mark-all-read");
    markAll.hidden = unread.length === 0;
    markAll.dataset.upTo = String(Math.max(0, ...notes.map((n) => n.id)));
    this._noteEls ??= new Map();
    const els = groups.map((group) => {
      let el = this._noteEls.get(group.key);
      if (!el) {
        const button = h("button", { type: "button" }, "Mark read");
        const title = h("p", { class: "title" });
        const meta = h("p", { class: "meta" });
        const more = h("ul", { class: "group-notes" });
        const details = h("details", { class: "group-more" }, h("summary", {}, "Show each"), more);
        el = { root: h("li", { class: "notification", dataset: { group: group.key } }, h("div", {}, title, meta, details), button), button, title, meta, more, details, ids: [] };
        button.addEventListener("click", () => this.actions.markRead(el.ids, button));
        this._noteEls.set(group.key, el);
      }
      const newest = group.notes[0];
      el.ids = group.notes.map((n) => n.id);
      el.root.dataset.count = String(group.notes.length);
      el.root.dataset.notificationId = String(newest.id);
      el.root.dataset.read = "false";
      setText(el.title, group.label);
      setText(el.meta, [group.notes.length === 1 ? newest.body : "", timeOf(newest.created_at)].filter(Boolean).join(" · "));
      el.button.setAttribute("aria-label", `Mark "${group.label}" as read`);
      el.details.hidden = group.notes.length === 1;
      if (group.notes.length > 1) el.more.replaceChildren(...group.notes.map((n) => h("li", {}, n.title)));
      return el.root;
    });
    const keys = new Set(groups.map((g) => g.key));
    for (const key of [...this._noteEls.keys()]) if (!keys.has(key)) this._noteEls.delete(key);
    arrange(list, els);
  }

  /** One banner per tracked item at or below its threshold, from the state: it survives a reload. */
  _renderAlerts(state) {
    const list = this.$("alert-list");
    this._alertEls ??= new Map();
    const els = [];
    for (const item of state.lowStockItems()) {
      if (this.dismissed.get(item.id) === item.available_quantity) continue;
      this.dismissed.delete(item.id);
      let el = this._alertEls.get(item.id);
      if (!el) {
        const text = h("span", {});
        const dismiss = h("button", { type: "button", "aria-label": `Dismiss low stock alert for ${item.name}` }, "Dismiss");
        el = { root: h("li", { class: "alert", role: "alert", dataset: { itemId: item.id } }, text, dismiss), text, quantity: item.available_quantity };
        dismiss.addEventListener("click", () => {
          this.dismissed.set(item.id, el.quantity); // until its stock changes
          el.root.remove();
          this.$("orders-heading").focus();
        });
        this._alertEls.set(item.id, el);
      }
      el.quantity = item.available_quantity;
      const words = `${item.name}, ${item.available_quantity} left${item.low_stock_threshold !== null ? ` (alert at ${item.low_stock_threshold})` : ""}`;
      if (el.words !== words) {
        el.words = words; // changed text only: a screen reader hears the alert again only when it changes
        el.text.replaceChildren(h("strong", {}, "Low stock: "), words);
      }
      els.push(el.root);
    }
    const ids = new Set(els.map((el) => Number(el.dataset.itemId)));
    for (const id of [...this._alertEls.keys()]) if (!ids.has(id)) this._alertEls.delete(id);
    arrange(list, els);
  }

  _renderActivity(state) {
    const list = this.$("activity-list");
    const shown = Number(list.dataset.lastSeq ?? 0);
    const fresh = state.activity.filter((a) => a.seq > shown).reverse();
    for (const entry of fresh) {
      list.prepend(
        h(
          "li",
          { dataset: { seq: entry.seq, type: entry.type, source: entry.source } },
          h("span", { class: "seq" }, `#${entry.seq}`),
          h("span", {}, entry.summary),
          h("span", { class: "meta" }, timeOf(entry.ts)),
        ),
      );
    }
    if (fresh.length) list.dataset.lastSeq = String(fresh.at(-1).seq);
    while (list.children.length > 200) list.lastElementChild.remove();
  }
}
