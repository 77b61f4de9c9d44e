// The dashboard's picture of one restaurant, built from the snapshot, events and retained state
// topics. Pure (no DOM, no network): every input is checked, anything malformed is counted and
// ignored. State is applied by seq (the per-restaurant order of events): an entity is replaced only
// by a newer envelope, so an event and the retained state message repeating it count once.

export const ORDER_STATUSES = ["pending", "preparing", "ready", "completed", "cancelled"];
export const OPEN_STATUSES = new Set(["pending", "preparing", "ready"]);
export const NEXT_STATUS = { pending: "preparing", preparing: "ready", ready: "completed" };
export const PRESENCE_STATES = new Set(["online", "offline", "lost"]);
const MAX_ACTIVITY = 200;
const MAX_NOTIFICATIONS = 200; // the snapshot's unread ones; read ones are dropped first
const MAX_CLOSED = 30;
const MAX_ORDERS = 400; // closed orders beyond this are forgotten (oldest first)

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const int = (v, fallback = 0) => (Number.isInteger(v) ? v : fallback);
const text = (v, max = 500) => (typeof v === "string" ? v.slice(0, max) : "");
const optText = (v, max = 120) => (typeof v === "string" ? v.slice(0, max) : null);

/** A kitchen ticket in the staff's words: "Void ticket for order #12 sent to grill" (never the event's name). */
export function ticketSummary(ticket, resent = false) {
  const kinds = { new: "Ticket", void: "Void ticket", reprint: "Reprint" };
  if (ticket.partial === true) Object.assign(kinds, { new: "ADD chit", void: "VOID chit" }); // an edit's lines only
  const number = int(ticket.number) || int(ticket.order_id);
  const order = number ? ` for order #${number}` : "";
  const station = text(ticket.station, 40);
  return `${kinds[ticket.kind] ?? "Kitchen ticket"}${order} sent to ${station || "the kitchen"}${resent ? " again" : ""}`;
}

export function formatCents(cents) {
  const value = int(cents);
  const sign = value < 0 ? "-" : "";
  const abs = Math.abs(value);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

export const PAYMENT_STATUSES = ["unpaid", "paid", "partially_refunded", "refunded"];

/** A normalized order, or null when the value is not an order. */
export function sanitizeOrder(value) {
  if (!isObject(value) || !Number.isInteger(value.id) || value.id < 1) return null;
  if (!ORDER_STATUSES.includes(value.status)) return null;
  const items = Array.isArray(value.items) ? value.items.filter(isObject).slice(0, 100) : [];
  return {
    id: value.id,
    number: Number.isInteger(value.number) && value.number > 0 ? value.number : null, // per restaurant, when the server sends it
    status: value.status,
    table_name: optText(value.table_name, 40),
    pickup_name: optText(value.pickup_name, 80),
    server_name: optText(value.server_name, 80),
    notes: text(value.notes),
    total_cents: int(value.total_cents),
    refunded_cents: int(value.refunded_cents),
    // core.rules.payments: unpaid | paid | partially_refunded | refunded (a server before it: unpaid)
    payment_status: PAYMENT_STATUSES.includes(value.payment_status) ? value.payment_status : "unpaid",
    version: int(value.version, 1),
    created_at: text(value.created_at, 40),
    updated_at: text(value.updated_at, 40),
    items: items.map((item) => ({
      name: text(item.name, 120) || "?",
      quantity: int(item.quantity, 1),
      modifiers: Array.isArray(item.modifiers) ? item.modifiers.filter((m) => typeof m === "string").slice(0, 20) : [],
      notes: text(item.notes),
      course: optText(item.course, 40),
      station: optText(item.station, 32),
    })),
  };
}

/** An order edit (`order_updated` with `change: "items"`) in words for the activity log: what each item
 * gained or lost across the edit's `before`/`after` lines, and the new total. */
export function editSummary(order, data) {
  const moved = new Map();
  const count = (lines, sign) => {
    for (const line of Array.isArray(lines) ? lines.filter(isObject).slice(0, 200) : []) {
      const name = text(line.name, 120) || "?";
      moved.set(name, (moved.get(name) ?? 0) + sign * int(line.quantity, 0));
    }
  };
  count(data.before, -1);
  count(data.after, 1);
  const parts = [...moved].filter(([, n]) => n !== 0).map(([name, n]) => `${n > 0 ? "+" : "−"}${Math.abs(n)} ${name}`);
  const what = parts.length ? parts.join(", ") : "lines changed";
  return `Order #${order.number ?? order.id} edited: ${what}; total ${formatCents(order.total_cents)}`;
}

/** A normalized stock item, or null. */
export function sanitizeItem(value) {
  if (!isObject(value) || !Number.isInteger(value.id) || value.id < 1) return null;
  const threshold = value.low_stock_threshold;
  return {
    id: value.id,
    name: text(value.name, 120) || `item ${value.id}`,
    available_quantity: Number.isInteger(value.available_quantity) ? value.available_quantity : null, // null: not tracked
    stock_quantity: int(value.stock_quantity),
    damaged_quantity: int(value.damaged_quantity),
    low_stock_threshold: Number.isInteger(threshold) ? threshold : null,
    enable_stock_tracking: value.enable_stock_tracking !== false,
  };
}

export function isLow(item) {
  return item.low_stock_threshold !== null && item.available_quantity !== null && item.available_quantity <= item.low_stock_threshold;
}

export function sanitizeNotification(value) {
  if (!isObject(value) || !Number.isInteger(value.id)) return null;
  return {
    id: value.id,
    kind: text(value.kind, 40),
    title: text(value.title, 200) || "(no title)",
    body: text(value.body),
    read: value.read === true,
    created_at: text(value.created_at, 40),
  };
}

/** A normalized refund record (GET …/refunds, or an `order_updated` event's `refund`), or null. */
export function sanitizeRefund(value) {
  if (!isObject(value) || !Number.isInteger(value.id)) return null;
  const by = isObject(value.by) ? value.by : {};
  return {
    id: value.id,
    amount_cents: int(value.amount_cents),
    reason: text(value.reason, 500),
    by: text(by.email, 254) || text(by.sub, 120) || "",
    created_at: text(value.created_at, 40),
    lines: Array.isArray(value.lines) ? value.lines.filter(isObject).length : 0,
  };
}

export function sanitizeDevice(value) {
  if (!isObject(value) || typeof value.id !== "string" || !value.id) return null;
  return {
    id: value.id.slice(0, 64),
    kind: text(value.kind, 20),
    name: text(value.name, 80) || value.id.slice(0, 64),
    station: optText(value.station, 32),
    presence: text(value.presence, 20) || "unknown",
    revoked: value.revoked === true,
  };
}

export function orderLabel(order) {
  const where = order.table_name ? `table ${order.table_name}` : order.pickup_name ? `pickup ${order.pickup_name}` : "";
  return `#${order.number ?? order.id}${where ? ` (${where})` : ""}`;
}

/** "4:05" under an hour, "1 h 05" past it: how long an order has waited, from milliseconds. */
export function elapsedLabel(ms) {
  const seconds = Math.max(0, Math.floor((Number.isFinite(ms) ? ms : 0) / 1000));
  const minutes = Math.floor(seconds / 60);
  if (minutes >= 60) return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")}`;
  return `${minutes}:${String(seconds % 60).padStart(2, "0")}`;
}

/** Milliseconds since an ISO time from the server (naive times are UTC); null when unreadable. */
export function sinceMs(iso, now = Date.now()) {
  if (typeof iso !== "string" || !iso) return null;
  const time = Date.parse(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(time) ? null : now - time;
}

/** The orders a status chip (`all` or a status) and a search (table, number, id, pickup, server, item names) let through. */
export function filterOrders(entries, { status = "all", query = "" } = {}) {
  const words = String(query).toLowerCase().split(/\s+/).filter(Boolean);
  return entries.filter(({ order }) => {
    if (status !== "all" && order.status !== status) return false;
    if (!words.length) return true;
    const haystack = [
      `#${order.number ?? order.id}`,
      `#${order.id}`,
      order.table_name,
      order.pickup_name,
      order.server_name,
      ...order.items.map((item) => item.name),
    ]
      .filter(Boolean)
      .join(" ")
      .toLowerCase();
    return words.every((word) => haystack.includes(word));
  });
}

const GROUP_WORDS = { ticket_unacknowledged: "not confirmed at", ticket_failed: "did not print at" };

/**
 * Unread notifications in groups of one kind and station, newest group first: a rush of late tickets
 * at the grill is one line ("3 tickets not confirmed at grill"), not one per ticket. The station is
 * the title's last word for ticket notifications (core.services.tickets words them so).
 */
export function groupNotifications(notes) {
  const groups = new Map();
  for (const note of [...notes].sort((a, b) => b.id - a.id)) {
    if (note.read) continue;
    const words = GROUP_WORDS[note.kind];
    const station = words ? (note.title.match(/ at (\S+)$/)?.[1] ?? null) : null;
    const key = words && station ? `${note.kind}:${station}` : `${note.kind}:${note.title}`;
    let group = groups.get(key);
    if (!group) {
      group = { key, kind: note.kind, station, notes: [], label: "" };
      groups.set(key, group);
    }
    group.notes.push(note);
  }
  for (const group of groups.values()) {
    const n = group.notes.length;
    const words = GROUP_WORDS[group.kind];
    if (n === 1) group.label = group.notes[0].title;
    else if (words && group.station) group.label = `${n} tickets ${words} ${group.station}`;
    else group.label = `${group.notes[0].title} (${n} times)`;
  }
  return [...groups.values()];
}

export class DashboardState {
  constructor(restaurantId) {
    this.restaurantId = restaurantId;
    this.orders = new Map(); // id -> {order, seq, isNew, newAt}
    this.items = new Map(); // id -> {item, seq}
    this.devices = new Map(); // id -> {device, presence, presenceKnown}
    this.notifications = new Map(); // id -> notification
    this.activity = []; // newest first: {seq, type, summary, ts, source}
    this.ignored = { total: 0, reasons: {} };
    this.changes = 0;
  }

  ignore(reason) {
    this.ignored.total += 1;
    this.ignored.reasons[reason] = (this.ignored.reasons[reason] ?? 0) + 1;
    this.changes += 1;
  }

  /**
   * Apply the snapshot. `replace`: it is the whole picture (the events between the old state and it
   * are gone from the server), so orders, items and notifications it does not list are forgotten.
   */
  applySnapshot(snapshot, { replace = false } = {}) {
    const seq = int(snapshot?.seq);
    if (replace) {
      this.orders.clear();
      this.items.clear();
      this.notifications.clear();
    }
    for (const raw of Array.isArray(snapshot?.orders) ? snapshot.orders : []) {
      const order = sanitizeOrder(raw);
      if (order) this._setOrder(order, seq);
    }
    for (const raw of Array.isArray(snapshot?.items) ? snapshot.items : []) {
      const item = sanitizeItem(raw);
      if (item) this._setItem(item, seq);
    }
    for (const raw of Array.isArray(snapshot?.devices) ? snapshot.devices : []) {
      const device = sanitizeDevice(raw);
      if (!device) continue;
      const known = this.devices.get(device.id); // a retained status that came first is newer than the table
      this._setDevice(device, known?.presenceKnown ? known.presence : device.presence, known?.presenceKnown ?? false);
    }
    for (const raw of Array.isArray(snapshot?.notifications) ? snapshot.notifications : []) {
      const note = sanitizeNotification(raw);
      if (note) this.notifications.set(note.id, note);
    }
    this._trimNotifications();
    this.changes += 1;
  }

  /** Apply one event (exactly once, in seq order: the sequencer's job). Returns what the UI should announce. */
  applyEvent(envelope, source = "live") {
    const { seq, type, data } = envelope;
    const result = { newOrder: null, lowStock: null };
    let summary = type;
    if (type === "new_order" || type === "order_updated") {
      const order = sanitizeOrder(data.order);
      if (!order) {
        this.ignore("bad_order");
        summary = `${type} (unreadable order)`;
      } else {
        this._setOrder(order, seq);
        if (type === "new_order") {
          const entry = this.orders.get(order.id);
          entry.isNew = true;
          entry.newAt = Date.now();
          result.newOrder = entry.order;
          summary = `New order ${orderLabel(order)}, ${order.items.length} item${order.items.length === 1 ? "" : "s"}`;
        } else if (data.change === "items") {
          summary = editSummary(order, data);
        } else if (data.change === "refund") {
          const amount = int(data.refund?.amount_cents);
          summary = `Order #${order.number ?? order.id} refunded ${formatCents(amount)}`;
        } else if (data.change === "paid") {
          summary = `Order #${order.number ?? order.id} paid`;
        } else {
          summary = `Order #${order.number ?? order.id} is ${order.status}`;
        }
      }
    } else if (type === "inventory_updated" || type === "low_stock") {
      const item = sanitizeItem(data.item);
      if (!item) {
        this.ignore("bad_item");
      } else {
        this._setItem(item, seq);
        if (type === "low_stock") {
          const available = Number.isInteger(data.available_quantity) ? data.available_quantity : item.available_quantity;
          const threshold = Number.isInteger(data.low_stock_threshold) ? data.low_stock_threshold : item.low_stock_threshold;
          result.lowStock = { itemId: item.id, name: item.name, available, threshold };
          summary = `Low stock: ${item.name}, ${available} left`;
        } else {
          summary = `Stock: ${item.name}, ${item.available_quantity ?? "not tracked, none"} available`;
        }
      }
    } else if (type === "notification") {
      const note = sanitizeNotification(data.notification);
      if (!note) {
        this.ignore("bad_notification");
      } else {
        this.notifications.set(note.id, note);
        this._trimNotifications();
        summary = `Notification: ${note.title}`;
      }
    } else if (type === "notification_updated") {
      const changed = this.applyNotificationUpdate(data);
      summary = changed === null ? "notification_updated (unreadable)" : `Notifications ${data.action}: ${changed}`;
    } else if (type === "device_updated") {
      const device = sanitizeDevice(data.device);
      if (!device) {
        this.ignore("bad_device");
      } else {
        const known = this.devices.get(device.id);
        this._setDevice(device, known?.presence ?? device.presence, known?.presenceKnown ?? false);
        summary = `Device ${device.name}: ${text(data.action, 40) || "updated"}`;
      }
    } else if (type === "menu_updated") {
      const removed = data.action === "deleted" && isObject(data.menu_item) ? data.menu_item.id : null;
      if (Number.isInteger(removed)) this.items.delete(removed);
      summary = `Menu ${text(data.action, 40) || "updated"}`;
    } else if (type === "category_updated") {
      summary = `Category ${text(data.action, 40) || "updated"}`;
    } else if (type === "kitchen_ticket") {
      summary = ticketSummary(isObject(data.ticket) ? data.ticket : {}, data.resent === true);
    }
    this.activity.unshift({ seq, type, summary, ts: typeof envelope.ts === "string" ? envelope.ts : "", source });
    this.activity.length = Math.min(this.activity.length, MAX_ACTIVITY);
    this.changes += 1;
    return result;
  }

  /** A retained `orders/open/{id}` message: the order's state, or null when it was cleared (closed). */
  applyOrderState(id, envelope) {
    if (envelope === null) {
      const entry = this.orders.get(id);
      if (entry && OPEN_STATUSES.has(entry.order.status)) {
        entry.cleared = true; // closed; the channel event carries the final status
        this.changes += 1;
      }
      return;
    }
    const order = sanitizeOrder(envelope.data.order);
    if (!order || order.id !== id) {
      this.ignore("bad_order_state");
      return;
    }
    this._setOrder(order, envelope.seq);
  }

  /** A retained `inventory/items/{id}` message: the item's stock, or null when the item was deleted. */
  applyItemState(id, envelope) {
    if (envelope === null) {
      if (this.items.delete(id)) this.changes += 1;
      return;
    }
    const item = sanitizeItem(envelope.data.item);
    if (!item || item.id !== id) {
      this.ignore("bad_item_state");
      return;
    }
    this._setItem(item, envelope.seq);
  }

  /** A device's retained `status`: {"state": "online" | "offline" | "lost", ...}, or null when cleared. */
  applyPresence(deviceId, value) {
    if (typeof deviceId !== "string" || !deviceId || deviceId.length > 64) {
      this.ignore("bad_presence");
      return;
    }
    const known = this.devices.get(deviceId);
    const device = known?.device ?? { id: deviceId, kind: "", name: deviceId, station: null, presence: "unknown", revoked: false };
    if (value === null) {
      this._setDevice(device, "unknown", true);
      return;
    }
    if (!isObject(value) || !PRESENCE_STATES.has(value.state)) {
      this.ignore("bad_presence");
      return;
    }
    this._setDevice(device, value.state, true);
  }

  openOrders() {
    return [...this.orders.values()]
      .filter((entry) => OPEN_STATUSES.has(entry.order.status) && !entry.cleared)
      .sort((a, b) => a.order.id - b.order.id); // oldest first: the one waiting longest leads
  }

  closedOrders() {
    return [...this.orders.values()]
      .filter((entry) => !OPEN_STATUSES.has(entry.order.status) || entry.cleared)
      .sort((a, b) => b.seq - a.seq)
      .slice(0, MAX_CLOSED);
  }

  stockItems() {
    return [...this.items.values()]
      .map((entry) => entry.item)
      .filter((item) => item.enable_stock_tracking)
      .sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
  }

  /** Tracked items at or below their threshold, from the state itself: a reload shows them again. */
  lowStockItems() {
    return this.stockItems().filter(isLow);
  }

  deviceList() {
    return [...this.devices.values()].sort((a, b) => a.device.id.localeCompare(b.device.id));
  }

  notificationList() {
    return [...this.notifications.values()].sort((a, b) => b.id - a.id);
  }

  _setOrder(order, seq) {
    const existing = this.orders.get(order.id);
    if (existing && (existing.seq > seq || (existing.seq === seq && existing.order.version >= order.version))) return false;
    if (existing && existing.order.version > order.version) return false;
    this.orders.set(order.id, { order, seq, isNew: existing?.isNew ?? false, newAt: existing?.newAt ?? 0 });
    this.changes += 1;
    if (this.orders.size > MAX_ORDERS) this._forgetClosedOrders();
    return true;
  }

  _forgetClosedOrders() {
    const closed = [...this.orders.values()]
      .filter((entry) => !OPEN_STATUSES.has(entry.order.status) || entry.cleared)
      .sort((a, b) => a.seq - b.seq);
    for (const entry of closed.slice(0, Math.max(0, this.orders.size - MAX_ORDERS * 0.75))) {
      this.orders.delete(entry.order.id);
    }
  }

  _setItem(item, seq) {
    const existing = this.items.get(item.id);
    if (existing && existing.seq >= seq) return false;
    this.items.set(item.id, { item, seq });
    this.changes += 1;
    return true;
  }

  _setDevice(device, presence, presenceKnown) {
    this.devices.set(device.id, { device, presence, presenceKnown });
    this.changes += 1;
  }

  /**
   * Another screen (or this one) marked notifications read or dismissed them: `{action, ids}`. Read ones
   * stay known (read), dismissed ones are forgotten. Returns how many this screen knew, or null for junk.
   */
  applyNotificationUpdate(data) {
    const ids = Array.isArray(data?.ids) ? data.ids.filter(Number.isInteger) : null;
    if (ids === null || !["read", "dismissed"].includes(data.action)) {
      this.ignore("bad_notification_update");
      return null;
    }
    let known = 0;
    for (const id of ids) {
      const note = this.notifications.get(id);
      if (!note) continue;
      known += 1;
      if (data.action === "dismissed") this.notifications.delete(id);
      else note.read = true;
    }
    this.changes += 1;
    return known;
  }

  _trimNotifications() {
    if (this.notifications.size <= MAX_NOTIFICATIONS) return;
    const keep = this.notificationList()
      .sort((a, b) => Number(a.read) - Number(b.read) || b.id - a.id)
      .slice(0, MAX_NOTIFICATIONS);
    this.notifications = new Map(keep.map((note) => [note.id, note]));
  }
}
