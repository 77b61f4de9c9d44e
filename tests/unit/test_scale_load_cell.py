"""devices.load_cell and devices.stability: a believable HX711 signal, and readings only once it settles."""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time

import pytest

from devices.load_cell import LoadCell
from devices.stability import StabilityFilter


def cell(grams: float = 5000.0, **options: float) -> LoadCell:
    return LoadCell(grams, rng=random.Random(7), **options)


def test_samples_scatter_around_the_true_weight_with_the_configured_noise():
    load = cell(noise_grams=0.5, drift_grams_per_minute=0)
    samples = [load.sample() for _ in range(4000)]
    assert statistics.fmean(samples) == pytest.approx(5000.0, abs=0.05)
    assert statistics.stdev(samples) == pytest.approx(0.5, rel=0.1)


def test_drift_is_slow_and_bounded():
    load = cell(noise_grams=0, drift_grams_per_minute=1.0, rate_hz=80)
    minute = [load.sample() for _ in range(80 * 60)]
    assert max(abs(s - 5000.0) for s in minute) < 6  # about a gram a minute, not a jump
    assert max(abs(a - b) for a, b in itertools.pairwise(minute)) < 0.2  # smooth from sample to sample
    hours = [load.sample() for _ in range(80 * 3600 * 2)][::800]
    assert max(abs(s - 5000.0) for s in hours) < 15  # pulled back: no random walk to nowhere


def test_items_taken_and_added_change_the_true_weight():
    load = cell(noise_grams=0, drift_grams_per_minute=0)
    load.take(250)
    assert load.sample() == pytest.approx(4750)
    load.add(1000)
    assert load.true_grams == 5750
    load.set_weight(0)
    assert load.sample() == pytest.approx(0)


@pytest.mark.parametrize("rate", [5, 9.9, 81, 200])
def test_an_hx711_samples_at_10_to_80_per_second(rate):
    with pytest.raises(ValueError, match="10 to 80"):
        LoadCell(0, rate_hz=rate)


def test_samples_are_paced_at_the_rate():
    load = cell(rate_hz=40)
    stop = threading.Event()
    started = time.monotonic()
    got = []
    for sample in load.samples(stop):
        got.append(sample)
        if len(got) == 20:
            stop.set()
    assert 0.4 <= time.monotonic() - started < 1.5  # 20 samples at 40/s: about half a second


def test_a_settled_weight_is_published_once():
    stability = StabilityFilter(window=10, tolerance_grams=3, min_change_grams=2)
    load = cell(noise_grams=0.5)
    published = [p for p in (stability.add(load.sample()) for _ in range(200)) if p is not None]
    assert len(published) == 1
    assert published[0] == pytest.approx(5000, abs=1)


def test_nothing_is_published_until_the_window_is_full_and_settled():
    stability = StabilityFilter(window=5, tolerance_grams=3)
    assert [stability.add(g) for g in (100, 100, 100, 100)] == [None] * 4
    assert stability.add(100) == 100
    assert stability.stable() == 100
    assert stability.add(110) is None  # a hand on the platform
    assert stability.stable() is None


def test_a_step_is_published_after_a_full_settled_window():
    stability = StabilityFilter(window=10, tolerance_grams=3, min_change_grams=2)
    load = cell(noise_grams=0.5)
    for _ in range(20):
        stability.add(load.sample())
    load.take(250)
    published = []
    for n in range(40):
        value = stability.add(load.sample())
        if value is not None:
            published.append((n, value))
    assert len(published) == 1
    n, value = published[0]
    assert n >= 9  # not before a whole window of the new weight
    assert value == pytest.approx(4750, abs=1)


def test_a_wobbling_platform_publishes_nothing():
    stability = StabilityFilter(window=10, tolerance_grams=3)
    rng = random.Random(3)
    assert all(stability.add(5000 + rng.uniform(-20, 20)) is None for _ in range(500))


def test_small_moves_below_the_minimum_change_are_not_republished():
    stability = StabilityFilter(window=4, tolerance_grams=3, min_change_grams=2)
    assert [stability.add(g) for g in (100, 100, 100, 100)][-1] == 100
    assert all(stability.add(101.5) is None for _ in range(8))
    published = [p for p in (stability.add(102.5) for _ in range(8)) if p is not None]
    assert len(published) == 1
    assert published[0] >= 102


def test_forget_published_republishes_the_same_weight():
    stability = StabilityFilter(window=3, tolerance_grams=3)
    for g in (50, 50, 50):
        stability.add(g)
    assert stability.mean() == 50
    stability.forget_published()
    assert stability.add(50) == 50


@pytest.mark.parametrize(("window", "tolerance", "change"), [(1, 3, 2), (10, 0, 2), (10, 3, -1)])
def test_filter_settings_are_checked(window, tolerance, change):
    with pytest.raises(ValueError):
        StabilityFilter(window, tolerance, change)
