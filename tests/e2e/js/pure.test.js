// Unit tests of the dashboard's pure modules, run in Chromium by tests/e2e/test_dashboard.py (no Node).
// The test serves this file at /__tests__/pure.test.js and calls run().

import { BoundedSet, Sequencer, classifyTopic, parseJson, validateEnvelope } from "/static/js/events.js";
import { BASE_MS, CAP_MS, backoffCeiling, backoffDelay, jittered } from "/static/js/backoff.js";
import {
  DashboardState,
  editSummary,
  elapsedLabel,
  filterOrders,
  formatCents,
  groupNotifications,
  isLow,
  orderLabel,
  sanitizeItem,
  sanitizeOrder,
  sanitizeRefund,
  sinceMs,
  ticketSummary,
} from "/static/js/state.js";
import { LiveConnection, grantedCodes, subscriptionFilters, websocketUrl } from "/static/js/connection.js";
import { Api, ApiError, newIdempotencyKey } from "/static/js/api.js";

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test("an order edit is told as what each item gained or lost, and the new total", () => {
  const order = { id: 31, number: 12, total_cents: 3300 };
  const data = {
    change: "items",
    before: [{ name: "Burger", quantity: 3 }, { name: "Bread", quantity: 1 }],
    after: [{ name: "Burger", quantity: 2 }, { name: "Bread", quantity: 1 }, { name: "Spritz", quantity: 2 }],
  };
  eq(editSummary(order, data), "Order #12 edited: \u22121 Burger, +2 Spritz; total 33.00");
  eq(editSummary(order, { before: [{ name: "Bread", quantity: 1 }], after: [{ name: "Bread", quantity: 1 }] }), "Order #12 edited: lines changed; total 33.00");
});

function eq(actual, expected, message = "") {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message} expected ${e}, got ${a}`);
}

function ok(value, message = "expected a truthy value") {
  if (!value) throw new Error(message);
}

const RID = 7;
const order = (id, status = "pending", version = 1) => ({ id, status, version, items: [{ name: "Burger", quantity: 1 }] });
const env = (seq, extra = {}) => ({
  v: 1,
  id: `e${seq}`,
  seq,
  type: "new_order",
  restaurant_id: RID,
  ts: "2026-11-28T19:42:00.000Z",
  data: { order: order(seq) },
  ...extra,
});

function recorder() {
  const applied = [];
  const s = new Sequencer({ apply: (e, source) => applied.push([e.seq, source]) });
  return { s, applied, seqs: () => applied.map(([seq]) => seq) };
}

// --- Sequencer ----------------------------------------------------------------------------------

test("nothing is applied before the baseline; then in seq order", () => {
  const { s, seqs } = recorder();
  eq(s.offer(env(11)), "held");
  eq(s.offer(env(12)), "held");
  eq(seqs(), []);
  s.baseline(10);
  eq(seqs(), [11, 12]);
  eq(s.lastSeq, 12);
});

test("the baseline drops held events it already covers", () => {
  const { s, seqs } = recorder();
  s.offer(env(9));
  s.offer(env(10));
  s.offer(env(11));
  s.baseline(10);
  eq(seqs(), [11]);
});

test("duplicates by id and by seq are applied once", () => {
  const { s, seqs } = recorder();
  s.baseline(0);
  eq(s.offer(env(1)), "applied");
  eq(s.offer(env(1)), "duplicate");
  eq(s.offer({ ...env(2), id: "e1" }), "duplicate", "same id, other seq");
  eq(s.offer({ ...env(1), id: "other" }), "duplicate", "seq already applied");
  eq(seqs(), [1]);
  eq(s.stats.duplicates, 3);
});

test("a gap holds later events and asks for a catch-up that fills it", () => {
  const { s, seqs } = recorder();
  s.baseline(5);
  s.offer(env(6));
  eq(s.offer(env(9)), "held");
  ok(s.needsCatchUp(), "a gap needs a catch-up");
  const { after, tick } = s.beginCatchUp();
  eq(after, 6);
  ok(!s.needsCatchUp(), "no second catch-up while one runs");
  s.acceptCatchUp([env(7), env(8), env(9)]);
  eq(s.endCatchUp({ complete: true, startedTick: tick }), 0);
  eq(seqs(), [6, 7, 8, 9]);
  ok(!s.needsCatchUp());
});

test("live events during a catch-up wait for it and come after the fetched ones", () => {
  const { s, applied } = recorder();
  s.baseline(1);
  const { tick } = s.beginCatchUp();
  eq(s.offer(env(2)), "held", "even the next seq waits");
  eq(s.offer(env(5)), "held");
  s.acceptCatchUp([env(2), env(3), env(4)]);
  s.endCatchUp({ complete: true, startedTick: tick });
  eq(applied, [[2, "catchup"], [3, "catchup"], [4, "catchup"], [5, "live"]]);
});

test("a live seq the complete fetch did not contain is dropped, not waited for forever", () => {
  const { s, seqs } = recorder();
  s.baseline(3);
  s.offer(env(999)); // junk with a far seq, arrived before the fetch
  ok(s.needsCatchUp());
  const { tick } = s.beginCatchUp();
  s.acceptCatchUp([]);
  eq(s.endCatchUp({ complete: true, startedTick: tick }), 1);
  eq(s.held.size, 0);
  eq(s.lastSeq, 3, "lastSeq did not jump");
  eq(s.offer(env(4)), "applied", "the stream goes on");
  eq(seqs(), [4]);
});

test("a live event that arrived after the fetch started is kept for the next round", () => {
  const { s, seqs } = recorder();
  s.baseline(3);
  const { tick } = s.beginCatchUp();
  s.offer(env(6)); // committed after the fetch read the table
  s.acceptCatchUp([env(4)]);
  eq(s.endCatchUp({ complete: true, startedTick: tick }), 0);
  ok(s.needsCatchUp(), "5 is still missing");
  const second = s.beginCatchUp();
  s.acceptCatchUp([env(5), env(6)]);
  s.endCatchUp({ complete: true, startedTick: second.tick });
  eq(seqs(), [4, 5, 6]);
});

test("an incomplete fetch drops nothing", () => {
  const { s } = recorder();
  s.baseline(1);
  s.offer(env(50));
  const { tick } = s.beginCatchUp();
  eq(s.endCatchUp({ complete: false, startedTick: tick }), 0);
  eq(s.held.size, 1);
});

test("the events endpoint is authoritative across a hole and over a conflicting live copy", () => {
  const { s, applied } = recorder();
  s.baseline(1);
  s.offer({ ...env(3), id: "forged" });
  const { tick } = s.beginCatchUp();
  s.acceptCatchUp([env(3), env(4)]); // the server no longer has seq 2
  s.endCatchUp({ complete: true, startedTick: tick });
  eq(applied, [[3, "catchup"], [4, "catchup"]]);
  eq(s.stats.dropped, 1);
});

test("out-of-order live delivery is reordered", () => {
  const { s, seqs } = recorder();
  s.baseline(0);
  s.offer(env(2));
  s.offer(env(3));
  s.offer(env(1));
  eq(seqs(), [1, 2, 3]);
});

test("BoundedSet forgets the oldest", () => {
  const set = new BoundedSet(3);
  for (const v of ["a", "b", "c", "d"]) set.add(v);
  ok(!set.has("a") && set.has("b") && set.has("d"));
  eq(set.size, 3);
});

// --- validation ---------------------------------------------------------------------------------

test("malformed envelopes are refused with a reason, never thrown", () => {
  const bad = [
    null, 1, "x", [], {}, { id: 1 },
    { ...env(1), id: "" },
    { ...env(1), seq: "1" },
    { ...env(1), seq: 0 },
    { ...env(1), seq: 1.5 },
    { ...env(1), seq: 2 ** 60 },
    { ...env(1), type: 3 },
    { ...env(1), restaurant_id: "7" },
    { ...env(1), data: null },
    { ...env(1), data: [] },
    { ...env(1), v: 2 },
  ];
  for (const value of bad) eq(validateEnvelope(value, RID).ok, false, JSON.stringify(value));
  eq(validateEnvelope({ ...env(1), restaurant_id: 8 }, RID), { ok: false, reason: "other_restaurant" });
  eq(validateEnvelope(env(1), RID).ok, true);
});

test("parseJson handles text, bytes, junk and invalid UTF-8", () => {
  eq(parseJson('{"a":1}'), { ok: true, value: { a: 1 } });
  eq(parseJson(new TextEncoder().encode("[1]")), { ok: true, value: [1] });
  eq(parseJson("not json").ok, false);
  eq(parseJson(new Uint8Array([0xff, 0xfe, 0x7b])).ok, false);
  eq(parseJson(new Uint8Array([])).ok, false);
});

test("topics are classified; other restaurants and unknown topics are not", () => {
  eq(classifyTopic("restaurant/7/orders", 7), { kind: "channel" });
  eq(classifyTopic("restaurant/7/inventory/low_stock", 7), { kind: "channel" });
  eq(classifyTopic("restaurant/7/orders/open/12", 7), { kind: "order_state", id: 12 });
  eq(classifyTopic("restaurant/7/inventory/items/3", 7), { kind: "item_state", id: 3 });
  eq(classifyTopic("restaurant/7/devices/printer-1/status", 7), { kind: "presence", id: "printer-1" });
  eq(classifyTopic("restaurant/8/orders", 7), null);
  eq(classifyTopic("restaurant/70/orders", 7), null);
  eq(classifyTopic("restaurant/7/orders/open/x", 7), null);
  eq(classifyTopic("restaurant/7/kitchen/grill/tickets", 7), null);
  eq(classifyTopic(null, 7), null);
});

test("the dashboard subscribes to its own restaurant only, no wildcard over other restaurants", () => {
  for (const filter of subscriptionFilters(7)) ok(filter.startsWith("restaurant/7/"), filter);
});

test("SUBACK codes: all granted, some refused (MQTT.js reports that as an error), no SUBACK", () => {
  eq(grantedCodes(["a", "b"], null), [0, 0]);
  const partial = Object.assign(new Error("Subscribe error: Unspecified error"), { packet: { granted: [0, 128] } });
  eq(grantedCodes(["a", "b"], partial), [0, 128]);
  eq(grantedCodes(["a", "b"], new Error("client disconnecting")), null);
  eq(grantedCodes(["a", "b"], Object.assign(new Error("x"), { packet: { granted: [0] } })), null);
});

test("the WebSocket URL follows the page's host and the configured port", () => {
  eq(websocketUrl({ ws_port: 8083, ws_path: "/mqtt" }, { protocol: "http:", hostname: "10.0.0.5" }), "ws://10.0.0.5:8083/mqtt");
  eq(websocketUrl({ ws_port: 8083, wss_port: 8084, ws_path: "/mqtt" }, { protocol: "https:", hostname: "x" }), "wss://x:8084/mqtt");
  // public_ws_url (a NATS node, a load balancer): used as it is, whatever the page's host
  eq(websocketUrl({ ws_port: 8083, ws_url: "wss://bus.example.com/mqtt" }, { protocol: "http:", hostname: "x" }), "wss://bus.example.com/mqtt");
});

// --- backoff ------------------------------------------------------------------------------------

test("backoff: first retry after the floor, doubling, capped", () => {
  eq(backoffCeiling(0), BASE_MS);
  eq(backoffCeiling(1), 2 * BASE_MS);
  eq(backoffCeiling(5), 16_000);
  eq(backoffCeiling(6), CAP_MS);
  eq(backoffCeiling(1000), CAP_MS);
  eq(backoffDelay(0, { random: () => 0.99 }), BASE_MS);
});

test("backoff: full jitter between the floor and the ceiling, never below the floor", () => {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    for (const r of [0, 0.25, 0.5, 0.999, 1, -5, NaN]) {
      const delay = backoffDelay(attempt, { random: () => r });
      ok(delay >= BASE_MS && delay <= backoffCeiling(attempt), `attempt ${attempt} r ${r}: ${delay}`);
    }
  }
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(8)));
  ok(spread.size > 10, "jitter spreads the delays");
});

test("backoff: ten failures in a row take at least five seconds even with the worst luck", () => {
  let total = 0;
  for (let attempt = 0; attempt < 10; attempt += 1) total += backoffDelay(attempt, { random: () => 0 });
  ok(total >= 5000, `${total}`);
});

test("jittered polling stays within ±20 %", () => {
  for (const r of [0, 0.5, 1]) {
    const d = jittered(3000, { random: () => r });
    ok(d >= 2400 && d <= 3600, `${d}`);
  }
});

// --- state --------------------------------------------------------------------------------------

test("an event and the retained state repeating it count once", () => {
  const state = new DashboardState(RID);
  const e = env(5);
  state.applyEvent(e, "live");
  state.applyOrderState(5, e);
  eq(state.openOrders().length, 1);
  eq(state.activity.length, 1);
});

test("a kitchen ticket reads as a sentence in the activity log, never the event's name", () => {
  const state = new DashboardState(RID);
  const ticket = { id: 4, kind: "void", order_id: 311, number: 12, station: "grill" };
  state.applyEvent({ ...env(7, { type: "kitchen_ticket" }), data: { ticket } }, "live");
  eq(state.activity[0].summary, "Void ticket for order #12 sent to grill");
  eq(ticketSummary({ kind: "new", order_id: 9, station: "bar" }, true), "Ticket for order #9 sent to bar again");
  eq(ticketSummary({ kind: "void", partial: true, number: 12, station: "grill" }), "VOID chit for order #12 sent to grill");
  eq(ticketSummary({ kind: "<b>", number: "x", station: 5 }), "Kitchen ticket sent to the kitchen"); // junk: still words
  state.applyEvent({ ...env(8, { type: "kitchen_ticket" }), data: { ticket: "junk" } }, "live");
  ok(!state.activity[0].summary.includes("kitchen_ticket"), state.activity[0].summary);
});

test("state is applied by seq: an older retained message does not undo a newer event", () => {
  const state = new DashboardState(RID);
  state.applyEvent({ ...env(6, { type: "order_updated" }), data: { order: order(1, "preparing", 2) } }, "live");
  state.applyOrderState(1, { ...env(5), data: { order: order(1, "pending", 1) } });
  eq(state.orders.get(1).order.status, "preparing");
});

test("the snapshot's seq protects its state from older messages", () => {
  const state = new DashboardState(RID);
  state.applySnapshot({ seq: 10, orders: [order(1, "ready", 3)], items: [], devices: [], notifications: [] });
  state.applyOrderState(1, { ...env(4), data: { order: order(1, "pending", 1) } });
  eq(state.orders.get(1).order.status, "ready");
  state.applyEvent({ ...env(11, { type: "order_updated" }), data: { order: order(1, "completed", 4) } }, "live");
  eq(state.openOrders().length, 0);
  eq(state.closedOrders()[0].order.status, "completed");
});

test("a cleared open-order topic closes the order", () => {
  const state = new DashboardState(RID);
  state.applyOrderState(3, { ...env(3), data: { order: order(3) } });
  state.applyOrderState(3, null);
  eq(state.openOrders().length, 0);
});

test("a long evening: closed orders are forgotten, open ones never", () => {
  const state = new DashboardState(RID);
  let seq = 0;
  for (let id = 1; id <= 1000; id += 1) {
    state.applyEvent({ ...env((seq += 1)), data: { order: order(id) } }, "live");
    if (id % 10 !== 0) {
      state.applyEvent({ ...env((seq += 1), { type: "order_updated" }), data: { order: order(id, "completed", 2) } }, "live");
    }
  }
  ok(state.orders.size <= 400, `${state.orders.size} orders kept`);
  eq(state.openOrders().length, 100);
});

test("malformed data is counted, never thrown", () => {
  const state = new DashboardState(RID);
  state.applyEvent({ ...env(1), data: {} }, "live");
  state.applyEvent({ ...env(2), data: { order: { id: "x" } } }, "live");
  state.applyEvent({ ...env(3, { type: "low_stock" }), data: { item: 5 } }, "live");
  state.applyOrderState(4, { ...env(4), data: { order: order(5) } }); // topic and order disagree
  state.applyPresence("p1", { state: "melted" });
  state.applyPresence("p1", "online");
  eq(state.ignored.total, 6);
  eq(state.openOrders().length, 0);
  eq(sanitizeOrder({ id: 1, status: "pending", items: "nope" }).items, []);
});

test("low stock raises an alert and marks the item", () => {
  const state = new DashboardState(RID);
  const item = { id: 2, name: "Burger", available_quantity: 1, low_stock_threshold: 2, stock_quantity: 1, damaged_quantity: 0 };
  const result = state.applyEvent({ ...env(8, { type: "low_stock" }), data: { item, available_quantity: 1, low_stock_threshold: 2 } }, "live");
  eq(result.lowStock.name, "Burger");
  eq(state.lowStockItems().map((i) => i.id), [2]);
  ok(isLow(state.stockItems()[0]));
});

test("an untracked item's available quantity stays null (not 0) and is never low", () => {
  const untracked = sanitizeItem({ id: 4, name: "Water", available_quantity: null, low_stock_threshold: 2, enable_stock_tracking: false });
  eq(untracked.available_quantity, null);
  ok(!isLow(untracked));
  eq(sanitizeItem({ id: 5, name: "Burger", available_quantity: 0, low_stock_threshold: 2 }).available_quantity, 0);
});

test("the low-stock banner comes from the state: a snapshot alone shows it, a refill clears it", () => {
  const state = new DashboardState(RID);
  const low = { id: 2, name: "Burger", available_quantity: 1, low_stock_threshold: 2 };
  const fine = { id: 3, name: "Fries", available_quantity: 9, low_stock_threshold: 2 };
  state.applySnapshot({ seq: 5, orders: [], items: [low, fine, { id: "x" }], devices: [], notifications: [] });
  eq(state.lowStockItems().map((i) => i.name), ["Burger"]);
  state.applyEvent({ ...env(6, { type: "inventory_updated" }), data: { item: { ...low, available_quantity: 8 } } }, "live");
  eq(state.lowStockItems(), []);
});

test("open orders are oldest first and show the per-restaurant number when there is one", () => {
  const state = new DashboardState(RID);
  state.applySnapshot({ seq: 9, orders: [order(5), order(2), { ...order(7), number: 3, table_name: "T4" }] });
  eq(state.openOrders().map((e) => e.order.id), [2, 5, 7]);
  eq(orderLabel(state.openOrders()[2].order), "#3 (table T4)");
  eq(orderLabel(state.openOrders()[0].order), "#2");
  eq(sanitizeOrder({ ...order(1), number: -4 }).number, null);
});

test("filter by status chip and search by table, number, id or item", () => {
  const entries = [
    { order: sanitizeOrder({ ...order(1), table_name: "T12", items: [{ name: "Fish tacos", quantity: 1 }] }) },
    { order: sanitizeOrder({ ...order(2, "ready"), number: 41, items: [{ name: "Burger", quantity: 2 }] }) },
    { order: sanitizeOrder({ ...order(3, "preparing"), pickup_name: "Ana" }) },
  ];
  const ids = (opts) => filterOrders(entries, opts).map((e) => e.order.id);
  eq(ids({}), [1, 2, 3]);
  eq(ids({ status: "ready" }), [2]);
  eq(ids({ query: "t12" }), [1]);
  eq(ids({ query: "#41" }), [2]);
  eq(ids({ query: "burger" }), [2, 3]); // order(3)'s default item is a Burger too
  eq(ids({ query: "burger", status: "preparing" }), [3]);
  eq(ids({ query: "fish tacos" }), [1]);
  eq(ids({ query: "nothing-like-it" }), []);
});

test("notifications group by kind and station; read ones drop out", () => {
  const note = (id, kind, title, read = false) => ({ id, kind, title, body: "", read, created_at: "" });
  const groups = groupNotifications([
    note(1, "ticket_unacknowledged", "Ticket for order 4 not confirmed at grill"),
    note(2, "ticket_unacknowledged", "Ticket for order 5 not confirmed at grill"),
    note(3, "ticket_unacknowledged", "Ticket for order 5 not confirmed at bar"),
    note(4, "ticket_unacknowledged", "Ticket for order 6 not confirmed at grill"),
    note(5, "ticket_failed", "Ticket for order 6 did not print at grill", true),
    note(6, "low_stock", "Low stock: Burger"),
    note(7, "low_stock", "Low stock: Burger"),
  ]);
  eq(groups.map((g) => g.label), ["Low stock: Burger (2 times)", "3 tickets not confirmed at grill", "Ticket for order 5 not confirmed at bar"]);
  eq(groups[1].notes.map((n) => n.id), [4, 2, 1]);
  eq(groupNotifications([]), []);
});

test("elapsed time reads as minutes and seconds, hours past the hour; junk times are null", () => {
  eq(elapsedLabel(0), "0:00");
  eq(elapsedLabel(65_000), "1:05");
  eq(elapsedLabel(3_725_000), "1 h 02");
  eq(elapsedLabel(-5), "0:00");
  eq(elapsedLabel(NaN), "0:00");
  eq(sinceMs("2026-01-01T00:00:00", Date.parse("2026-01-01T00:01:00Z")), 60_000);
  eq(sinceMs("not a time"), null);
  eq(sinceMs(null), null);
});

test("presence: online, lost, cleared", () => {
  const state = new DashboardState(RID);
  state.applyPresence("printer-1", { state: "online", boot_id: "b1" });
  eq(state.devices.get("printer-1").presence, "online");
  state.applyPresence("printer-1", { state: "lost" });
  eq(state.devices.get("printer-1").presence, "lost");
  state.applyPresence("printer-1", null);
  eq(state.devices.get("printer-1").presence, "unknown");
});

test("a retained status that arrived before the snapshot is kept; the snapshot adds the name", () => {
  const state = new DashboardState(RID);
  state.applyPresence("printer-1", { state: "lost" });
  state.applySnapshot({ seq: 1, devices: [{ id: "printer-1", kind: "printer", name: "Grill printer", presence: "online" }] });
  eq(state.devices.get("printer-1").presence, "lost");
  eq(state.devices.get("printer-1").device.name, "Grill printer");
});

test("money is formatted from cents", () => {
  eq(formatCents(1200), "12.00");
  eq(formatCents(5), "0.05");
  eq(formatCents(-250), "-2.50");
  eq(formatCents("x"), "0.00");
});

// --- events pruned after the retention period (410) ------------------------------------------------

test("a replacing snapshot forgets what it does not list; a plain one merges", () => {
  const state = new DashboardState(RID);
  state.applyEvent({ ...env(1), data: { order: order(1) } }, "live");
  state.applySnapshot({ seq: 5, orders: [order(2)] });
  eq(state.openOrders().map((e) => e.order.id).sort(), [1, 2]);
  state.applySnapshot({ seq: 90, orders: [order(3)] }, { replace: true });
  eq(state.openOrders().map((e) => e.order.id), [3]);
});

test("a 410 from the catch-up reloads the snapshot, replacing the picture, and goes on from its seq", async () => {
  const calls = [];
  const snapshots = [{ seq: 2, orders: [] }, { seq: 50, orders: [] }];
  const api = {
    snapshot: async () => {
      calls.push("snapshot");
      return snapshots.shift();
    },
    eventsAfter: async (_rid, after) => {
      calls.push(`after=${after}`);
      if (after < 40) throw Object.assign(new Error("events up to seq 40 were pruned"), { status: 410 });
      return after === 50 ? [env(51)] : [];
    },
  };
  const seen = [];
  const sink = {
    snapshot: (snapshot, options) => seen.push(`snapshot ${snapshot.seq}${options?.replace ? " replace" : ""}`),
    event: (envelope) => seen.push(`event ${envelope.seq}`),
    ignored: (reason) => seen.push(`ignored ${reason}`),
  };
  const connection = new LiveConnection({ mqtt: null, api, rid: RID, wsUrl: "ws://test/mqtt", tabId: "t", sink });
  await connection.catchUp();
  eq(calls, ["snapshot", "after=2", "snapshot", "after=50"]);
  eq(seen, ["snapshot 2", "snapshot 50 replace", "event 51"]);
  eq(connection.sequencer.lastSeq, 51);
  eq(connection.lastPollOk, true);
});

test("any other catch-up error is not taken for a 410", async () => {
  const api = {
    snapshot: async () => ({ seq: 2, orders: [] }),
    eventsAfter: async () => {
      throw Object.assign(new Error("boom"), { status: 500 });
    },
  };
  const sink = { snapshot: () => {}, event: () => {}, ignored: () => {} };
  const connection = new LiveConnection({ mqtt: null, api, rid: RID, wsUrl: "ws://test/mqtt", tabId: "t", sink });
  let failed = null;
  await connection.catchUp().catch((error) => (failed = error));
  eq(failed?.status, 500);
  eq(connection.sequencer.lastSeq, 2);
});

// --- Api: idempotent writes -----------------------------------------------------------------------

function scriptedFetch(outcomes) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, method: init.method, key: init.headers["idempotency-key"], body: init.body });
    const outcome = outcomes.shift();
    if (outcome instanceof Error) throw outcome;
    return new Response(JSON.stringify(outcome.body), { status: outcome.status, headers: { "content-type": "application/json" } });
  };
  return { calls, fetchImpl };
}

test("a lost answer is retried with the same idempotency key; the next action gets a new key", async () => {
  const { calls, fetchImpl } = scriptedFetch([
    new TypeError("network down"),
    { status: 503, body: { detail: "busy" } },
    { status: 200, body: { id: 3, status: "ready" } },
    { status: 200, body: { id: 3, status: "completed" } },
  ]);
  const api = new Api({ fetchImpl, retryDelaysMs: [0, 0] });
  eq(await api.setStatus(RID, 3, "ready"), { id: 3, status: "ready" });
  eq(await api.setStatus(RID, 3, "completed"), { id: 3, status: "completed" });
  eq(calls.length, 4);
  ok(calls[0].key && calls[0].key === calls[1].key && calls[1].key === calls[2].key, "one key for one action");
  ok(calls[3].key && calls[3].key !== calls[0].key, "a new action has a new key");
  eq(calls.map((c) => c.body), [...Array(3).fill('{"status":"ready"}'), '{"status":"completed"}']);
});

test("refusals are not retried, and retries stop after the last delay", async () => {
  const refused = scriptedFetch([{ status: 409, body: { detail: "pending cannot become completed" } }]);
  const api = new Api({ fetchImpl: refused.fetchImpl, retryDelaysMs: [0, 0] });
  let error = null;
  await api.refund(RID, 3, 100, "cold").catch((e) => (error = e));
  ok(error instanceof ApiError && error.status === 409, "a 409 is the answer");
  eq(refused.calls.length, 1);
  const down = scriptedFetch([new TypeError("a"), new TypeError("b"), new TypeError("c"), new TypeError("d")]);
  const failing = new Api({ fetchImpl: down.fetchImpl, retryDelaysMs: [0, 0] });
  error = null;
  await failing.refund(RID, 3, 100, "cold").catch((e) => (error = e));
  ok(error instanceof ApiError && error.status === 0, "cannot reach the server");
  eq(down.calls.length, 3);
  eq(new Set(down.calls.map((c) => c.key)).size, 1);
});

test("idempotency keys are printable ASCII without a secure context too", () => {
  const insecure = { getRandomValues: (a) => globalThis.crypto.getRandomValues(a) };
  for (const key of [newIdempotencyKey(), newIdempotencyKey(insecure)]) ok(/^[\x20-\x7e]{1,255}$/.test(key), key);
  ok(newIdempotencyKey(insecure) !== newIdempotencyKey(insecure), "fresh each time");
});

test("notifications read or dismissed on another screen are read or gone here", () => {
  const state = new DashboardState(RID);
  const note = (id) => ({ id, kind: "low_stock", title: `n${id}`, read: false });
  state.applySnapshot({ seq: 1, orders: [], items: [], devices: [], notifications: [note(1), note(2), note(3)] });
  const update = (seq, action, ids) => ({ ...env(seq), type: "notification_updated", data: { action, ids, at: "x" } });
  state.applyEvent(update(2, "read", [1, 2, 99]));
  eq([...state.notifications.values()].map((n) => [n.id, n.read]), [[1, true], [2, true], [3, false]]);
  state.applyEvent(update(3, "dismissed", [2, 3]));
  eq([...state.notifications.keys()], [1]);
  eq(state.activity[0].summary, "Notifications dismissed: 2");
  const before = state.ignored.total;
  state.applyEvent(update(4, "exploded", [1]));
  state.applyEvent({ ...update(5, "read", [1]), data: { action: "read", ids: "1" } });
  eq(state.ignored.total, before + 2, "junk is counted, never thrown");
});

test("an order says its payment status; a refund record reads as who and why", () => {
  eq(sanitizeOrder({ ...order(1), payment_status: "partially_refunded" }).payment_status, "partially_refunded");
  eq(sanitizeOrder({ ...order(1), payment_status: "stolen" }).payment_status, "unpaid");
  eq(sanitizeOrder(order(1)).payment_status, "unpaid", "a server from before payments");
  const record = { id: 4, amount_cents: 550, reason: "cold", by: { sub: "user-2", user_id: 2, email: "a@x.example" }, created_at: "t", lines: [{ order_item_id: 1, quantity: 1 }] };
  eq(sanitizeRefund(record), { id: 4, amount_cents: 550, reason: "cold", by: "a@x.example", created_at: "t", lines: 1 });
  eq(sanitizeRefund({ ...record, by: { sub: null, email: null } }).by, "");
  eq(sanitizeRefund({ amount_cents: 1 }), null);
});

export async function run() {
  const results = [];
  for (const { name, fn } of tests) {
    try {
      await fn();
      results.push({ name, ok: true });
    } catch (error) {
      results.push({ name, ok: false, error: String(error?.stack ?? error) });
    }
  }
  return results;
}
