"""Scale readings → stock, and silent scales → one notification (docs/devices.md, "Scale readings").

`ScaleReadings` is the ingest handler for ("readings", "scale") and `ScaleReadings.sweep` its
once-a-second pass; the rules they apply are `core.rules.scales`. It remembers, per scale, the
last accepted reading (to refuse replays), the count waiting out its dwell time, and when the
scale was last heard. That memory is shared by the ingest's MQTT thread and the sweeper thread,
so it sits behind one lock.

Lock order, always: the database transaction first, then the lock. The ingest calls the handler
inside a transaction that (on SQLite, `BEGIN IMMEDIATE`) already holds the write lock; the sweep
therefore opens its transaction and reads before it takes the lock, never the other way round.

A silent scale is never read as "empty": stale means no stock change from it at all until it
speaks again, and one notification each way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from prometheus_client import Gauge
from sqlmodel import select

from bridge.ingest import DeviceMessage, Rejected
from config.settings import Settings
from core.locking import locked
from core.models import Device, MenuItem
from core.rules.scales import Action, LastAccepted, Reading, Tracker, check_grams, check_replay, count_of, countable
from core.services import inventory
from core.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.scales")

MAX_SEQ = 2**63 - 1  # beyond this the database cannot hold the number
SCALES_STALE = Gauge("orderbus_scales_stale", "scales that missed their heartbeats; their stock is left alone")

Clock = Callable[[], float]
WallClock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_reading(body: dict[str, Any]) -> Reading:
    """The reading in `body`, every field of the JSON type docs/devices.md gives it.

    Rejected `bad_type` for a malformed field, `bad_weight` for grams that are not a number.
    """
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
    if isinstance(grams, bool) or not isinstance(grams, int | float):
        raise Rejected("bad_weight", "grams must be a finite number")
    return Reading(item_id, float(grams), seq, boot_id, when)


@dataclass
class ScaleState:
    restaurant_id: int
    heard_at: float  # clock() of the last accepted reading, or when the bus started watching
    tracker: Tracker
    item_id: int | None = None
    last: LastAccepted | None = None
    stale: bool = False


@dataclass(frozen=True)
class ScaleView:
    """A snapshot of what the bus knows of one scale (for tests and diagnostics)."""

    seq: int | None
    boot_id: str | None
    item_id: int | None
    candidate: int | None
    stale: bool


@dataclass(eq=False)  # one object per bus, compared by identity
class ScaleReadings:
    """The scale rules of one bus process. `clock` (monotonic seconds) drives dwell and staleness,
    `wall_clock` judges the readings' own timestamps; tests replace either."""

    settings: Settings = field(repr=False)
    clock: Clock = time.monotonic
    wall_clock: WallClock = _utcnow
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _scales: dict[str, ScaleState] = field(default_factory=dict, init=False, repr=False)
    _seeded: bool = field(default=False, init=False, repr=False)

    @property
    def stale_after_seconds(self) -> float:
        return self.settings.scale_stale_missed * self.settings.scale_heartbeat_seconds

    # --- the ingest handler (MQTT thread) ---------------------------------------------------

    def __call__(self, uow: UnitOfWork, device: Device, message: DeviceMessage) -> dict[str, Any] | None:
        reading = parse_reading(message.body)
        check_grams(reading.grams)
        # Locked before anything is emitted (a notification takes the restaurant row): `core.locking`.
        item = countable(device, reading.item_id, locked(uow.session, MenuItem, reading.item_id))
        assert item.id is not None and item.unit_weight_grams is not None
        with self._lock:
            now = self.clock()
            state = self._scales.get(device.id)
            check_replay(reading, state.last if state else None, self.wall_clock())
            count = count_of(reading.grams, device.tare_grams, item.unit_weight_grams, self.settings.scale_tolerance)
            if state is None:
                state = ScaleState(device.restaurant_id, now, self._tracker())
            if state.item_id != item.id:
                state.tracker = self._tracker()  # a count of another item is no evidence for this one
            action = state.tracker.decide(count, item.stock_quantity, now)
            if state.stale:
                inventory.notify(
                    uow,
                    device.restaurant_id,
                    kind="scale_back",
                    title=f"Scale {device.name} is reporting again",
                    body=f"It weighs {reading.grams:g} g of {item.name} ({count} units).",
                )
            if action is not Action.NONE:
                inventory.count_stock(
                    uow, device.restaurant_id, item.id, count, action.value, actor=f"device:{device.id}"
                )
                log.info("scale %s counted %d of item %d (%s)", device.id, count, item.id, action.value)
            if state.stale:
                state.stale = False
                SCALES_STALE.dec()
                log.info("scale %s is reporting again", device.id)
            state.item_id, state.heard_at = item.id, now
            state.last = LastAccepted(reading.boot_id, reading.seq, reading.ts)
            self._scales[device.id] = state
        return None

    def _tracker(self) -> Tracker:
        return Tracker(self.settings.scale_dwell_seconds, self.settings.scale_restock_units)

    # --- the sweep (sweeper thread) ---------------------------------------------------------

    def sweep(self, uow: UnitOfWork) -> None:
        """Mark scales stale that missed `scale_stale_missed` heartbeats: one notification, no stock change.

        All of one sweep is one transaction, which the sweeper commits. A scale is marked stale in
        memory before that commit: a commit that fails (the sweeper counts it) loses that one
        notification and changes no stock.
        """
        if not self._seeded:
            self._seed(uow)
        with self._lock:
            now = self.clock()
            silent = [
                device_id
                for device_id, state in self._scales.items()
                if not state.stale and now - state.heard_at > self.stale_after_seconds
            ]
        for device_id in silent:
            self._mark_stale(uow, device_id)

    def _seed(self, uow: UnitOfWork) -> None:
        """After a restart, watch the scales that were in use, so one that never comes back is noticed."""
        query = select(Device.id, Device.restaurant_id).where(
            Device.kind == "scale",
            Device.revoked == False,  # noqa: E712
            Device.last_seen != None,  # noqa: E711
        )
        rows = list(uow.session.exec(query))
        with self._lock:
            now = self.clock()
            for device_id, restaurant_id in rows:
                self._scales.setdefault(device_id, ScaleState(restaurant_id, now, self._tracker()))
            self._seeded = True

    def _mark_stale(self, uow: UnitOfWork, device_id: str) -> None:
        device = uow.session.get(Device, device_id)  # opens the transaction before the lock is taken
        with self._lock:
            state = self._scales.get(device_id)
            if state is None or state.stale:
                return
            silent_for = self.clock() - state.heard_at
            if silent_for <= self.stale_after_seconds:
                return  # a reading arrived in the meantime
            if device is None or device.revoked or device.kind != "scale":
                del self._scales[device_id]  # gone: nothing to watch any more
                return
            inventory.notify(
                uow,
                state.restaurant_id,
                kind="scale_stale",
                title=f"Scale {device.name} stopped reporting",
                body=f"No reading for {silent_for:.0f} s; the stock it counts is left as it was.",
            )
            state.stale = True
            state.tracker.forget()  # a change that was waiting is not applied from a silent scale
            SCALES_STALE.inc()
        log.warning("scale %s is stale: no reading for %.0f s", device_id, silent_for)

    # --- diagnostics ---------------------------------------------------------------------------

    def view(self, device_id: str) -> ScaleView | None:
        with self._lock:
            state = self._scales.get(device_id)
            if state is None:
                return None
            last = state.last
            return ScaleView(
                seq=last.seq if last else None,
                boot_id=last.boot_id if last else None,
                item_id=state.item_id,
                candidate=state.tracker.candidate,
                stale=state.stale,
            )
