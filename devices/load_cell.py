"""A simulated HX711-class load cell: what a real stock scale's ADC hands the agent.

Real cells sample at 10 or 80 per second, with noise of a fraction of a gram and a zero point that
wanders slowly with temperature. The simulation keeps those three properties, so the stability
filter and the bus are exercised with the kind of signal they will see in a kitchen, and lets a
test (or a person at the terminal) take items off or put them back.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator

MIN_RATE_HZ = 10.0
MAX_RATE_HZ = 80.0


class LoadCell:
    """Samples = true weight + slow drift + gaussian noise, in grams.

    The drift is a bounded random walk: over one minute it moves about `drift_grams_per_minute`
    and it is pulled back towards zero so a simulation left running for hours stays believable.
    """

    def __init__(
        self,
        grams: float,
        *,
        rate_hz: float = 20.0,
        noise_grams: float = 0.5,
        drift_grams_per_minute: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"an HX711 samples at {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} per second, not {rate_hz:g}")
        if noise_grams < 0 or drift_grams_per_minute < 0:
            raise ValueError("noise and drift cannot be negative")
        self.rate_hz = rate_hz
        self._true = float(grams)
        self._noise = noise_grams
        samples_per_minute = rate_hz * 60
        self._drift_step = drift_grams_per_minute / math.sqrt(samples_per_minute)
        self._pull_back = 1 / (samples_per_minute * 10)  # drift forgets itself over about ten minutes
        self._drift = 0.0
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # the weight is changed from another thread than the one sampling

    @property
    def true_grams(self) -> float:
        return self._true

    def set_weight(self, grams: float) -> None:
        with self._lock:
            self._true = float(grams)

    def take(self, grams: float) -> None:
        """Items lifted off the platform."""
        with self._lock:
            self._true -= grams

    def add(self, grams: float) -> None:
        """Items put on the platform (a restock)."""
        with self._lock:
            self._true += grams

    def sample(self) -> float:
        """One conversion: what the ADC reads right now."""
        with self._lock:
            self._drift += self._rng.gauss(0.0, self._drift_step) - self._drift * self._pull_back
            return self._true + self._drift + self._rng.gauss(0.0, self._noise)

    def samples(
        self,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[float]:
        """Samples paced at `rate_hz` until `stop` is set (a late sample does not shift the schedule)."""
        period = 1.0 / self.rate_hz
        due = clock()
        while not stop.is_set():
            yield self.sample()
            due += period
            delay = due - clock()
            if delay < -period:  # fell far behind (a suspended process): start a new schedule
                due = clock()
            elif delay > 0 and stop.wait(delay):
                return
