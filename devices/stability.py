"""The stability filter of a scale: publish a weight only once it has settled, and only when it moved.

A hand on the platform, a tray being slid in, a knock: each makes the samples spread. Publishing
those would make the bus count items that were never there. A reading is stable when a whole
window of samples lies within `tolerance_grams`; it is worth publishing when its mean differs
from the last published one by at least `min_change_grams` (otherwise noise and drift would
publish a new reading every window).
"""

from __future__ import annotations

from collections import deque


class StabilityFilter:
    def __init__(self, window: int = 10, tolerance_grams: float = 3.0, min_change_grams: float = 2.0) -> None:
        if window < 2:
            raise ValueError("a stability window needs at least two samples")
        if tolerance_grams <= 0 or min_change_grams < 0:
            raise ValueError("the tolerance must be positive and the minimum change not negative")
        self._samples: deque[float] = deque(maxlen=window)
        self._tolerance = tolerance_grams
        self._min_change = min_change_grams
        self._published: float | None = None

    def add(self, grams: float) -> float | None:
        """Take one sample; returns the new stable weight when one should be published, else None."""
        self._samples.append(grams)
        stable = self.stable()
        if stable is None:
            return None
        if self._published is not None and abs(stable - self._published) < self._min_change:
            return None
        self._published = stable
        return stable

    def stable(self) -> float | None:
        """The mean of the window when the window is full and settled, else None."""
        if len(self._samples) < (self._samples.maxlen or 0):
            return None
        if max(self._samples) - min(self._samples) > self._tolerance:
            return None
        return sum(self._samples) / len(self._samples)

    def mean(self) -> float | None:
        """The mean of what is in the window, settled or not (what a tare zeroes)."""
        return sum(self._samples) / len(self._samples) if self._samples else None

    def forget_published(self) -> None:
        """Publish the next stable weight even if it did not move (after a tare, the zero moved)."""
        self._published = None
