// Reconnect delays: exponential, capped, with full jitter above a floor. Pure; unit-tested in the browser.
//
// attempt 0 waits exactly `baseMs`; attempt n waits a uniformly random time in
// [baseMs, min(capMs, baseMs * 2^n)]. The floor keeps the loop from ever being tight (the old design's
// reconnect storms), the jitter spreads a kitchen full of tablets after a broker restart, the cap
// keeps a long outage from making the screen slow to come back.

export const BASE_MS = 500;
export const CAP_MS = 30_000;

export function backoffCeiling(attempt, { baseMs = BASE_MS, capMs = CAP_MS } = {}) {
  const n = Math.max(0, Math.min(Math.floor(attempt), 30));
  return Math.min(capMs, baseMs * 2 ** n);
}

export function backoffDelay(attempt, { baseMs = BASE_MS, capMs = CAP_MS, random = Math.random } = {}) {
  const ceiling = backoffCeiling(attempt, { baseMs, capMs });
  const r = Math.min(Math.max(Number(random()) || 0, 0), 1);
  return Math.round(baseMs + r * (ceiling - baseMs));
}

/** A delay of about `ms`, spread by ±`spread` (0.2 = ±20 %), for periodic work like polling. */
export function jittered(ms, { spread = 0.2, random = Math.random } = {}) {
  return Math.round(ms * (1 - spread + 2 * spread * random()));
}
