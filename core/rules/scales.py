"""The rules for scale readings, as pure functions over plain values (docs/devices.md, "Scale readings").

- `check_grams`: a weight a kitchen scale can read.
- `countable`: the menu item a scale may count.
- `count_of`: grams → a whole number of items, or a refusal when the weight is not near one.
- `check_replay`: a reading the bus has already seen, or one from too long ago, changes nothing.
- `Tracker.decide`: when a count becomes stock (restock at once, anything else after a dwell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.domain import Invalid
from core.models import Device, MenuItem

MAX_GRAMS = 1_000_000.0  # one tonne: nothing on a kitchen scale weighs more
NEGATIVE_SLACK_GRAMS = 10.0  # a zeroed scale reads a little below zero when it drifts
MAX_AGE = timedelta(minutes=5)  # older readings are history, not stock
MAX_AHEAD = timedelta(seconds=60)  # a clock further ahead than this is wrong


@dataclass(frozen=True)
class Reading:
    item_id: int
    grams: float
    seq: int
    boot_id: str
    ts: datetime


def check_grams(grams: float) -> None:
    """Invalid `bad_weight` for a weight no kitchen scale reads: not finite, below zero beyond drift, over a tonne."""
    if not math.isfinite(grams):
        raise Invalid("bad_weight", "grams must be a finite number")
    if grams < -NEGATIVE_SLACK_GRAMS:
        raise Invalid("bad_weight", f"a negative weight: {grams:g} g")
    if grams > MAX_GRAMS:
        raise Invalid("bad_weight", f"an impossible weight: {grams:g} g (the limit is {MAX_GRAMS:g})")


def countable(scale: Device, item_id: int, item: MenuItem | None) -> MenuItem:
    """`item` (menu item `item_id`, None if there is none) if `scale` may count it.

    Invalid `unknown_item` unless it is the scale's own item (when it has one), of its restaurant,
    tracked, with a unit weight.
    """
    if scale.item_id is not None and item_id != scale.item_id:
        raise Invalid("unknown_item", f"this scale weighs menu item {scale.item_id}, not {item_id}")
    if item is None or item.restaurant_id != scale.restaurant_id:
        raise Invalid("unknown_item", f"menu item {item_id} not found")
    if not item.enable_stock_tracking:
        raise Invalid("unknown_item", f"stock tracking is off for menu item {item_id}")
    if not item.unit_weight_grams or item.unit_weight_grams <= 0:
        raise Invalid("unknown_item", f"menu item {item_id} has no unit weight to count by")
    return item


def count_of(grams: float, tare_grams: float, unit_grams: float, tolerance: float) -> int:
    """How many items `grams` is, after the container's tare; refuses a weight that is not near a whole count.

    Invalid `bad_weight` when the net weight is below zero by more than the tolerance (less than
    the empty container), `not_whole` when it is further than `tolerance` of a unit from a count.
    """
    units = (grams - tare_grams) / unit_grams
    if units < -tolerance:
        raise Invalid("bad_weight", f"{grams:g} g is less than the container's tare of {tare_grams:g} g")
    count = max(0, math.floor(units + 0.5))
    if abs(units - count) > tolerance:
        raise Invalid(
            "not_whole",
            f"{grams - tare_grams:g} g net is {units:.2f} units of {unit_grams:g} g; "
            f"more than {tolerance:g} of a unit from a whole count",
        )
    return count


@dataclass(frozen=True)
class LastAccepted:
    """What the bus remembers of a scale's last accepted reading, to recognise replays."""

    boot_id: str
    seq: int
    ts: datetime


def check_replay(reading: Reading, last: LastAccepted | None, now: datetime) -> None:
    """Invalid `replayed` for a reading already seen (same boot, seq not higher), older than the last
    accepted one, or outside the window of believable clocks."""
    if reading.ts < now - MAX_AGE:
        raise Invalid("replayed", f"the reading is from {reading.ts.isoformat()}, too long ago")
    if reading.ts > now + MAX_AHEAD:
        raise Invalid("replayed", f"the reading is from {reading.ts.isoformat()}, in the future")
    if last is None:
        return
    if reading.boot_id == last.boot_id and reading.seq <= last.seq:
        raise Invalid("replayed", f"seq {reading.seq} of this boot was already seen (last {last.seq})")
    if reading.ts < last.ts:
        raise Invalid("replayed", "the reading is older than one already accepted")


class Action(StrEnum):
    NONE = "none"  # the count is the stock, or it has not held long enough yet
    RESTOCK = "restock"  # a large jump up: apply now
    COUNT = "scale"  # a change that held for the dwell time: apply now


@dataclass
class Tracker:
    """Decides, reading by reading, when a scale's count becomes stock.

    A change must hold for `dwell_seconds` over consecutive readings (a reading with another count
    starts the wait again), so a hand resting on the platform or a scale wobbling between two
    counts does not rewrite stock; an upward jump of at least `restock_units` is a delivery being
    put down and is applied at once.
    """

    dwell_seconds: float
    restock_units: int
    candidate: int | None = None
    since: float = 0.0

    def decide(self, count: int, stock: int, now: float) -> Action:
        if count == stock:
            self.candidate = None
            return Action.NONE
        if count - stock >= self.restock_units:
            self.candidate = None
            return Action.RESTOCK
        if self.candidate != count:
            self.candidate, self.since = count, now
        if now - self.since >= self.dwell_seconds:
            self.candidate = None
            return Action.COUNT
        return Action.NONE

    def forget(self) -> None:
        """Drop a change that was waiting (the scale went stale, or the decision was not applied)."""
        self.candidate = None
