// Pure event-stream logic of the dashboard: envelope validation, ordering by seq, dedupe by id,
// gap detection and catch-up bookkeeping. No DOM, no network: unit-tested in the browser.
//
// Every event of a restaurant has a gap-free `seq`. The sequencer applies events exactly once and in
// seq order, whatever mix of sources they come from (live MQTT, the catch-up endpoint, polling):
// - an event at or below the last applied seq, or with an id already applied, is a duplicate;
// - an event beyond lastSeq + 1 is held and reported as a gap (fetch `events?after=lastSeq`);
// - during a catch-up, live events are held and applied after the fetched ones;
// - the catch-up endpoint is the authority: a held live event that arrived before a complete fetch
//   started and that the fetch did not contain was never committed (junk, a forged seq): it is
//   dropped and counted instead of blocking the stream forever.

export const ENVELOPE_VERSION = 1;
const MAX_SEQ = Number.MAX_SAFE_INTEGER;

/** Decode an MQTT payload (Uint8Array or string) as JSON; `{ok:false}` instead of throwing. */
export function parseJson(payload) {
  try {
    const text = typeof payload === "string" ? payload : new TextDecoder("utf-8", { fatal: true }).decode(payload);
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, reason: "not_json" };
  }
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isSeq(value) {
  return Number.isInteger(value) && value >= 1 && value <= MAX_SEQ;
}

/**
 * Check an event envelope's shape (and that it belongs to `restaurantId`, when given).
 * Returns `{ok: true, envelope}` or `{ok: false, reason}`; never throws.
 */
export function validateEnvelope(value, restaurantId = null) {
  if (!isObject(value)) return { ok: false, reason: "not_an_object" };
  if (typeof value.id !== "string" || value.id.length === 0 || value.id.length > 100) {
    return { ok: false, reason: "bad_id" };
  }
  if (!isSeq(value.seq)) return { ok: false, reason: "bad_seq" };
  if (typeof value.type !== "string" || value.type.length === 0 || value.type.length > 64) {
    return { ok: false, reason: "bad_type" };
  }
  if (!Number.isInteger(value.restaurant_id)) return { ok: false, reason: "bad_restaurant" };
  if (restaurantId !== null && value.restaurant_id !== restaurantId) return { ok: false, reason: "other_restaurant" };
  if (!isObject(value.data)) return { ok: false, reason: "bad_data" };
  if (value.v !== undefined && value.v !== ENVELOPE_VERSION) return { ok: false, reason: "unknown_version" };
  return { ok: true, envelope: value };
}

/** A set that remembers at most `limit` values, forgetting the oldest first. */
export class BoundedSet {
  constructor(limit = 5000) {
    this.limit = limit;
    this.values = new Set();
  }

  has(value) {
    return this.values.has(value);
  }

  add(value) {
    if (this.values.has(value)) return;
    this.values.add(value);
    if (this.values.size > this.limit) {
      this.values.delete(this.values.values().next().value);
    }
  }

  get size() {
    return this.values.size;
  }
}

/**
 * Applies events exactly once, in seq order. `apply(envelope, source)` is called for each event.
 *
 * Sources: "live" (MQTT), "catchup" (the events endpoint: after a reconnect, on a gap, or polling).
 * The caller sets the baseline (`baseline(seq)`, from the snapshot) and runs catch-ups:
 *   const {after, tick} = s.beginCatchUp(); ...fetch pages after `after`, s.acceptCatchUp(page)...;
 *   s.endCatchUp({complete: true, startedTick: tick});
 * and starts one whenever `needsCatchUp()` is true.
 */
export class Sequencer {
  constructor({ apply, remember = 5000 } = {}) {
    this.apply = apply ?? (() => {});
    this.lastSeq = null;
    this.held = new Map(); // seq -> {envelope, source, tick}
    this.seen = new BoundedSet(remember);
    this.holding = false;
    this.tick = 0;
    this.stats = { applied: 0, duplicates: 0, held: 0, dropped: 0 };
  }

  /** The seq the current state is known to include (from a snapshot). Only moves forward. */
  baseline(seq) {
    if (!isSeq(seq) && seq !== 0) throw new RangeError(`bad baseline seq ${seq}`);
    if (this.lastSeq === null || seq > this.lastSeq) this.lastSeq = seq;
    this._dropHeldUpTo(this.lastSeq);
    if (!this.holding) this._drain();
  }

  /** Offer an event (already validated). Returns "applied", "duplicate" or "held". */
  offer(envelope, source = "live") {
    this.tick += 1;
    if (this.seen.has(envelope.id) || (this.lastSeq !== null && envelope.seq <= this.lastSeq)) {
      this.stats.duplicates += 1;
      return "duplicate";
    }
    if (this.lastSeq === null || this.holding || envelope.seq !== this.lastSeq + 1) {
      const existing = this.held.get(envelope.seq);
      if (existing === undefined) {
        this.held.set(envelope.seq, { envelope, source, tick: this.tick });
        this.stats.held += 1;
      } else if (existing.envelope.id !== envelope.id) {
        this.stats.dropped += 1; // two different events claim one seq: keep the first, the fetch decides
      } else {
        this.stats.duplicates += 1;
      }
      return "held";
    }
    this._applyOne(envelope, source);
    this._drain();
    return "applied";
  }

  /** True when events are held beyond a hole and no catch-up is running: fetch `after=lastSeq`. */
  needsCatchUp() {
    return this.lastSeq !== null && !this.holding && this.held.size > 0;
  }

  /** Start a catch-up: live events are held until `endCatchUp`. Returns where to fetch from. */
  beginCatchUp() {
    this.holding = true;
    this.tick += 1;
    return { after: this.lastSeq ?? 0, tick: this.tick };
  }

  /**
   * Apply one page from the events endpoint (in seq order). The endpoint is authoritative: its
   * events are applied even across a hole (events the server no longer has), and a held live
   * event with the same seq but another id is dropped.
   */
  acceptCatchUp(envelopes) {
    let applied = 0;
    for (const envelope of envelopes) {
      if (this.seen.has(envelope.id) || (this.lastSeq !== null && envelope.seq <= this.lastSeq)) {
        this.stats.duplicates += 1;
        continue;
      }
      const held = this.held.get(envelope.seq);
      if (held !== undefined) {
        this.held.delete(envelope.seq);
        if (held.envelope.id !== envelope.id) this.stats.dropped += 1;
      }
      this._applyOne(envelope, "catchup");
      applied += 1;
    }
    return applied;
  }

  /**
   * End a catch-up. `complete`: the fetch reached the end of the server's list (a page shorter
   * than the limit). Held events are then applied in order; those the complete fetch should have
   * contained (they arrived before it started) but did not are dropped. Returns the number dropped.
   */
  endCatchUp({ complete = false, startedTick = 0 } = {}) {
    this.holding = false;
    this._dropHeldUpTo(this.lastSeq ?? 0);
    let dropped = 0;
    if (complete) {
      for (const [seq, held] of [...this.held]) {
        if (held.tick < startedTick) {
          this.held.delete(seq);
          dropped += 1;
        }
      }
      this.stats.dropped += dropped;
    }
    this._drain();
    return dropped;
  }

  _applyOne(envelope, source) {
    this.lastSeq = envelope.seq;
    this.seen.add(envelope.id);
    this.stats.applied += 1;
    this.apply(envelope, source);
  }

  _drain() {
    if (this.lastSeq === null) return;
    for (;;) {
      const next = this.held.get(this.lastSeq + 1);
      if (next === undefined) return;
      this.held.delete(this.lastSeq + 1);
      if (this.seen.has(next.envelope.id)) {
        this.stats.duplicates += 1;
        continue;
      }
      this._applyOne(next.envelope, next.source);
    }
  }

  _dropHeldUpTo(seq) {
    for (const held of [...this.held.keys()]) {
      if (held <= seq) {
        this.held.delete(held);
        this.stats.duplicates += 1;
      }
    }
  }
}

/** The topic parts the dashboard cares about, or null for anything else. */
export function classifyTopic(topic, restaurantId) {
  const prefix = `restaurant/${restaurantId}/`;
  if (typeof topic !== "string" || !topic.startsWith(prefix)) return null;
  const rest = topic.slice(prefix.length).split("/");
  const [first, second, third] = rest;
  if (rest.length === 1 && ["orders", "inventory", "menu", "categories", "notifications"].includes(first)) {
    return { kind: "channel" };
  }
  if (rest.length === 2 && first === "inventory" && second === "low_stock") return { kind: "channel" };
  if (rest.length === 3 && first === "orders" && second === "open" && /^\d+$/.test(third)) {
    return { kind: "order_state", id: Number(third) };
  }
  if (rest.length === 3 && first === "inventory" && second === "items" && /^\d+$/.test(third)) {
    return { kind: "item_state", id: Number(third) };
  }
  if (rest.length === 3 && first === "devices" && third === "status" && second) {
    return { kind: "presence", id: second };
  }
  return null;
}
