"""The rules for scale readings, free of the database and of MQTT so they are easy to test and reason about.

- `parse_reading`: the document a scale publishes, with every field checked (docs/devices.md).
- `count_of`: grams → a whole number of items, or a refusal when the weight is not near one.
- `check_replay`: a reading the bus has already seen, or one from too long ago, changes nothing.
- `Tracker.decide`: when a count becomes stock (restock at once, anything else after a dwell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeGuard

from bridge.ingest import Rejected

MAX_GRAMS = 1_000_000.0  # one tonne: nothing on a kitchen scale weighs more
NEGATIVE_SLACK_GRAMS = 10.0  # a zeroed scale reads a little below zero when it drifts
MAX_AGE = timedelta(minutes=5)  # older readings are history, not stock
MAX_AHEAD = timedelta(seconds=60)  # a clock further ahead than this is wrong
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Reading:
    item_id: int
    grams: float
    seq: int
    boot_id: str
    ts: datetime


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_reading(body: dict[str, Any]) -> Reading:
    """The reading in `body`; Rejected `bad_type` for a malformed field, `bad_weight` for an impossible weight."""
    item_id, grams, seq = body.get("item_id"), body.get("grams"), body.get("seq")
    boot_id, ts = body.get("boot_id"), body.get("ts")
    if not _is_int(item_id) or not 0 < item_id <= MAX_SEQ:
        raise Rejected("bad_type", "item_id must be a positive integer")
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise Rejected("bad_type", "seq must be a non-negative integer")
    if not isinstance(boot_id, str) or not 0 < len(boot_id) <= 64:
        raise Rejected("bad_type", "boot_id must be a non-empty string of at most 64 characters")
    if not isinstance(ts, str) or len(ts) > 40:
        raise Rejected("bad_type", "ts must be an ISO 8601 time with a time zone")
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        raise Rejected("bad_type", "ts must be an ISO 8601 time with a time zone") from None
    if when.utcoffset() is None:
        raise Rejected("bad_type", "ts must carry a time zone (…Z or +00:00)")
    if isinstance(grams, bool) or not isinstance(grams, int | float) or not math.isfinite(grams):
        raise Rejected("bad_weight", "grams must be a finite number")
    if grams < -NEGATIVE_SLACK_GRAMS:
        raise Rejected("bad_weight", f"a negative weight: {grams:g} g")
    if grams > MAX_GRAMS:
        raise Rejected("bad_weight", f"an impossible weight: {grams:g} g (the limit is {MAX_GRAMS:g})")
    return Reading(item_id, float(grams), seq, boot_id, when)


def count_of(grams: float, tare_grams: float, unit_grams: float, tolerance: float) -> int:
    """How many items `grams` is, after the container's tare; refuses a weight that is not near a whole count.

    Rejected `bad_weight` when the net weight is below zero by more than the tolerance (less than
    the empty container), `not_whole` when it is further than `tolerance` of a unit from a count.
    """
    units = (grams - tare_grams) / unit_grams
    if units < -tolerance:
        raise Rejected("bad_weight", f"{grams:g} g is less than the container's tare of {tare_grams:g} g")
    count = max(0, math.floor(units + 0.5))
    if abs(units - count) > tolerance:
        raise Rejected(
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
    """Rejected `replayed` for a reading already seen (same boot, seq not higher), older than the last
    accepted one, or outside the window of believable clocks."""
    if reading.ts < now - MAX_AGE:
        raise Rejected("replayed", f"the reading is from {reading.ts.isoformat()}, too long ago")
    if reading.ts > now + MAX_AHEAD:
        raise Rejected("replayed", f"the reading is from {reading.ts.isoformat()}, in the future")
    if last is None:
        return
    if reading.boot_id == last.boot_id and reading.seq <= last.seq:
        raise Rejected("replayed", f"seq {reading.seq} of this boot was already seen (last {last.seq})")
    if reading.ts < last.ts:
        raise Rejected("replayed", "the reading is older than one already accepted")


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
