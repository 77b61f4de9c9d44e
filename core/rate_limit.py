"""Rate limits, standard library only: a token bucket (`burst` at once, then `rate` per second), and a
window of failures (the login limit, `FailureWindow`).

The broker holds a bucket per device connection to enforce the per-device publish limit, and a device
agent holds one to stay below that limit (the broker drops what exceeds it without telling the
device). One implementation, so both sides count the same way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class TokenBucket:
    """Thread-safe: a device agent takes tokens from its worker thread and from paho's."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens, self._last = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token, owing one if none is there; returns how long to wait before using it (0: at once)."""
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_take(self) -> bool:
        """A token if one is there now; never waits and never owes."""
        with self._lock:
            self._refill()
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now


class FailureWindow:
    """At most `limit` failures per key within `window` seconds: the login limit, per account and per address.

    Only failures count (a user who types the right password is never slowed down); once a key has
    `limit` failures in the window, `retry_after` says how long until the oldest of them leaves it.
    Each key keeps its last `limit` failure times and no more, and keys whose failures have all left
    the window are dropped when the table grows past `max_keys`, so a flood of made-up accounts or
    addresses costs bounded memory. Thread-safe: FastAPI runs sync endpoints on a thread pool.
    """

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a failure window needs a limit of at least 1 and a positive window")
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        with self._lock:
            times = self._failures.get(key)
            if times is None or len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - self._clock())

    def failed(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            if key not in self._failures and len(self._failures) >= self.max_keys:
                self._forget_before(now - self.window)
            self._failures.setdefault(key, deque(maxlen=self.limit)).append(now)

    def forget(self, key: str) -> None:
        """A success: the key's failures no longer count."""
        with self._lock:
            self._failures.pop(key, None)

    def _forget_before(self, horizon: float) -> None:
        stale = [key for key, times in self._failures.items() if times[-1] <= horizon]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:  # all recent: forget the oldest rather than grow
            oldest = min(self._failures, key=lambda key: self._failures[key][-1])
            del self._failures[oldest]
