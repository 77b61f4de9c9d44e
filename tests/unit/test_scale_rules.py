"""core.rules.scales: possible weights, the items a scale may count, grams → count, replays, and the
dwell/restock decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import Invalid
from core.models import Device, MenuItem
from core.rules.scales import (
    MAX_AGE,
    MAX_AHEAD,
    Action,
    LastAccepted,
    Reading,
    Tracker,
    check_grams,
    check_replay,
    count_of,
    countable,
)

NOW = datetime(2026, 11, 28, 19, 42, tzinfo=UTC)


def reason(call: Any) -> str:
    with pytest.raises(Invalid) as caught:
        call()
    return caught.value.reason


@pytest.mark.parametrize("grams", [float("nan"), float("inf"), -float("inf"), -10.5, -5000, 1_000_000.5, 1e12])
def test_impossible_weights_are_bad_weight(grams):
    assert reason(lambda: check_grams(grams)) == "bad_weight"


@pytest.mark.parametrize("grams", [-9.9, 0, 5230.5, 1_000_000])
def test_a_little_below_zero_is_drift_not_an_error(grams):
    check_grams(grams)


def scale(item_id: int | None = 12) -> Device:
    return Device(id="scale-1", restaurant_id=1, kind="scale", name="scale-1", item_id=item_id)


def item(**changes: Any) -> MenuItem:
    fields: dict[str, Any] = {"id": 12, "restaurant_id": 1, "menu_id": 1, "name": "Buns", "price_cents": 100}
    fields |= {"enable_stock_tracking": True, "unit_weight_grams": 250.0}
    return MenuItem(**(fields | changes))


def test_a_scale_counts_its_own_tracked_item():
    bun = item()
    assert countable(scale(), 12, bun) is bun
    assert countable(scale(item_id=None), 12, bun) is bun  # a scale without an item of its own counts any


@pytest.mark.parametrize(
    ("scale_item", "found"),
    [
        (13, item()),  # another item than the scale's own
        (12, None),  # no such item
        (12, item(restaurant_id=2)),  # another restaurant's
        (12, item(enable_stock_tracking=False)),
        (12, item(unit_weight_grams=None)),
        (12, item(unit_weight_grams=0.0)),
    ],
)
def test_items_a_scale_cannot_count_are_unknown_item(scale_item, found):
    assert reason(lambda: countable(scale(scale_item), 12, found)) == "unknown_item"


@pytest.mark.parametrize(
    ("grams", "tare", "unit", "count"),
    [
        (5230.0, 230.0, 250.0, 20),
        (5230.0 + 62.0, 230.0, 250.0, 20),  # 0.248 of a unit over
        (5230.0 - 62.0, 230.0, 250.0, 20),
        (230.0, 230.0, 250.0, 0),
        (200.0, 230.0, 250.0, 0),  # a little under the tare: empty
        (0.0, 0.0, 80.0, 0),
        (7.0, 0.0, 80.0, 0),
    ],
)
def test_grams_to_count(grams, tare, unit, count):
    assert count_of(grams, tare, unit, 0.25) == count


@pytest.mark.parametrize(("grams", "why"), [(5230.0 + 70.0, "not_whole"), (5355.0, "not_whole"), (100.0, "bad_weight")])
def test_weights_far_from_a_whole_count_are_refused(grams, why):
    assert reason(lambda: count_of(grams, 230.0, 250.0, 0.25)) == why


@given(
    count=st.integers(0, 2000),
    unit=st.floats(1.0, 5000.0),
    tare=st.floats(0.0, 10_000.0),
    off=st.floats(-0.24, 0.24),
)
def test_count_within_the_tolerance_is_the_count(count, unit, tare, off):
    assert count_of(tare + (count + off) * unit, tare, unit, 0.25) == count


def reading(seq: int, boot: str = "a", ts: datetime = NOW) -> Reading:
    return Reading(1, 100.0, seq, boot, ts)


def test_the_first_reading_is_not_a_replay():
    check_replay(reading(0), None, NOW)


def test_a_seq_already_seen_in_this_boot_is_a_replay():
    last = LastAccepted("a", 5, NOW)
    check_replay(reading(6), last, NOW)
    assert reason(lambda: check_replay(reading(5), last, NOW)) == "replayed"
    assert reason(lambda: check_replay(reading(1), last, NOW)) == "replayed"


def test_a_new_boot_starts_counting_again_but_not_back_in_time():
    last = LastAccepted("a", 500, NOW)
    check_replay(reading(1, boot="b", ts=NOW + timedelta(seconds=1)), last, NOW)
    assert reason(lambda: check_replay(reading(1, boot="b", ts=NOW - timedelta(seconds=1)), last, NOW)) == "replayed"


def test_readings_from_far_away_in_time_are_replays():
    assert reason(lambda: check_replay(reading(1, ts=NOW - MAX_AGE - timedelta(seconds=1)), None, NOW)) == "replayed"
    assert reason(lambda: check_replay(reading(1, ts=NOW + MAX_AHEAD + timedelta(seconds=1)), None, NOW)) == "replayed"
    check_replay(reading(1, ts=NOW - MAX_AGE + timedelta(seconds=1)), None, NOW)


def test_a_change_applies_only_after_it_held_for_the_dwell():
    tracker = Tracker(dwell_seconds=5, restock_units=5)
    assert tracker.decide(9, stock=10, now=0) is Action.NONE
    assert tracker.candidate == 9
    assert tracker.decide(9, stock=10, now=4.9) is Action.NONE
    assert tracker.decide(9, stock=10, now=5.0) is Action.COUNT
    assert tracker.candidate is None


def test_another_count_starts_the_dwell_again():
    tracker = Tracker(dwell_seconds=5, restock_units=5)
    tracker.decide(9, stock=10, now=0)
    assert tracker.decide(8, stock=10, now=4) is Action.NONE
    assert tracker.decide(8, stock=10, now=8.9) is Action.NONE
    assert tracker.decide(8, stock=10, now=9) is Action.COUNT


def test_back_to_the_stock_forgets_the_change():
    tracker = Tracker(dwell_seconds=5, restock_units=5)
    tracker.decide(9, stock=10, now=0)
    assert tracker.decide(10, stock=10, now=3) is Action.NONE
    assert tracker.candidate is None
    assert tracker.decide(9, stock=10, now=6) is Action.NONE  # waits a full dwell again


def test_a_large_jump_up_is_a_restock_at_once_and_a_small_one_waits():
    tracker = Tracker(dwell_seconds=5, restock_units=5)
    assert tracker.decide(15, stock=10, now=0) is Action.RESTOCK
    assert tracker.decide(14, stock=10, now=0) is Action.NONE
    assert tracker.decide(14, stock=10, now=5) is Action.COUNT


def test_a_large_jump_down_still_waits():
    tracker = Tracker(dwell_seconds=5, restock_units=5)
    assert tracker.decide(0, stock=30, now=0) is Action.NONE
    assert tracker.decide(0, stock=30, now=5) is Action.COUNT


def test_no_dwell_applies_at_once():
    assert Tracker(dwell_seconds=0, restock_units=5).decide(3, stock=4, now=0) is Action.COUNT
