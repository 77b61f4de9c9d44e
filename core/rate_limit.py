"""A token bucket: `burst` at once, then `rate` per second. Standard library only.

The broker holds one per device connection to enforce the per-device publish limit, and a device
agent holds one to stay below that limit (the broker drops what exceeds it without telling the
device). One implementation, so both sides count the same way.
"""

from __future__ import annotations

import threading
import time
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
