"""bridge.scales.ScaleReadings on a real SQLite database with injected clocks: dwell, restock, hysteresis,
stale and back, replays, items that cannot be counted, and the lock order between ingest and sweeper."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from bridge.ingest import DeviceMessage, Rejected, reason_of
from bridge.scales import ScaleReadings, ScaleView
from config.settings import Settings
from core.commands import MenuItemIn
from core.db import create_schema, make_engine
from core.domain import DomainError
from core.models import Device, Menu, MenuItem, Notification, OutboxEvent, Restaurant
from core.services import devices, menu
from core.unit_of_work import UnitOfWork

UNIT = 250.0
TARE = 400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Bus:
    """The scale rules of one bus over a real database, driven the way the ingest and the sweeper drive them."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.engine: Engine = make_engine(f"sqlite:///{tmp_path / 'scales.db'}")
        create_schema(self.engine)
        defaults = {"scale_dwell_seconds": 5.0, "scale_heartbeat_seconds": 10.0, "scale_stale_missed": 3}
        self.settings = Settings(data_dir=tmp_path, **(defaults | settings))
        self.clock = Clock()
        self.wall = datetime.now(UTC)
        self.rules = ScaleReadings(self.settings, clock=self.clock, wall_clock=lambda: self.wall)
        self.seq = 0
        with UnitOfWork(self.engine) as uow:
            restaurants = [Restaurant(name="A"), Restaurant(name="B")]
            uow.session.add_all(restaurants)
            uow.session.flush()
            rid, other_rid = (r.id for r in restaurants)
            assert rid is not None and other_rid is not None
            self.rid, self.other_rid = rid, other_rid
            uow.commit()

    def item(self, rid: int | None = None, **fields: Any) -> int:
        rid = rid or self.rid
        with UnitOfWork(self.engine) as uow:
            menu_row = Menu(restaurant_id=rid, name="Main")
            uow.session.add(menu_row)
            uow.session.flush()
            assert menu_row.id is not None
            data: dict[str, Any] = {
                "name": "Buns",
                "price_cents": 100,
                "enable_stock_tracking": True,
                "unit_weight_grams": UNIT,
            }
            data |= fields
            item = menu.create_item(uow, rid, MenuItemIn(menu_id=menu_row.id, **data))
            uow.commit()
            assert item.id is not None
            return item.id

    def scale(self, device_id: str, item_id: int | None, tare: float = TARE, rid: int | None = None) -> str:
        with UnitOfWork(self.engine) as uow:
            uow.session.add(
                Device(
                    id=device_id,
                    restaurant_id=rid or self.rid,
                    kind="scale",
                    name=device_id,
                    item_id=item_id,
                    tare_grams=tare,
                )
            )
            uow.commit()
        return device_id

    def send(self, device_id: str, item_id: int, grams: Any, **changes: Any) -> None:
        """One reading through the handler, inside a transaction as the ingest opens it."""
        self.seq += 1
        body = {"item_id": item_id, "grams": grams, "seq": self.seq, "boot_id": "boot-1"}
        body["ts"] = (self.wall).isoformat()
        body.update(changes)
        with UnitOfWork(self.engine) as uow:
            device = devices.get_device(uow, self.rid, device_id)
            self.rules(uow, device, DeviceMessage(self.rid, device_id, "readings", body))
            uow.commit()

    def view(self, device_id: str) -> ScaleView:
        """The rules' view of a scale they must be watching."""
        view = self.rules.view(device_id)
        assert view is not None, f"{device_id} is not watched"
        return view

    def count(self, device_id: str, item_id: int, units: float, **changes: Any) -> None:
        self.send(device_id, item_id, TARE + units * UNIT, **changes)

    def refused(self, device_id: str, item_id: int, grams: Any, **changes: Any) -> str:
        """The reason the ingest would answer the scale with."""
        try:
            self.send(device_id, item_id, grams, **changes)
        except (Rejected, DomainError) as exc:
            return reason_of(exc)
        raise AssertionError(f"{grams!r} g was accepted")

    def sweep(self) -> None:
        """One sweep in one transaction, committed after it as the sweeper does."""
        with UnitOfWork(self.engine) as uow:
            self.rules.sweep(uow)
            uow.commit()

    def stock(self, item_id: int) -> int:
        with UnitOfWork(self.engine) as uow:
            item = uow.session.get(MenuItem, item_id)
            assert item is not None
            return item.stock_quantity

    def events(self, type_: str) -> list[dict]:
        with UnitOfWork(self.engine) as uow:
            rows = uow.session.exec(select(OutboxEvent).where(OutboxEvent.type == type_).order_by(col(OutboxEvent.seq)))
            return [row.envelope for row in rows]

    def notes(self, kind: str) -> list[str]:
        """The titles of the notifications of one kind."""
        with UnitOfWork(self.engine) as uow:
            return list(uow.session.exec(select(Notification.title).where(Notification.kind == kind)))


@pytest.fixture
def bus(tmp_path: Path) -> Bus:
    return Bus(tmp_path)


def reasons(bus: Bus) -> list[str]:
    return [e["data"]["reason"] for e in bus.events("inventory_updated") if e["data"]["reason"] != "created"]


def test_a_lower_count_becomes_stock_only_after_the_dwell(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    bus.count("s1", item, 9)
    assert bus.stock(item) == 10
    assert bus.view("s1").candidate == 9
    bus.clock.now += 4.9
    bus.count("s1", item, 9)
    assert bus.stock(item) == 10
    bus.clock.now += 0.1
    bus.count("s1", item, 9.1)  # within the tolerance: still 9
    assert bus.stock(item) == 9
    assert reasons(bus) == ["scale"]
    assert bus.view("s1").candidate is None


def test_a_wobble_that_does_not_hold_changes_nothing(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    for units in [9, 10, 9, 8, 10, 9, 8, 9, 10] * 3:
        bus.count("s1", item, units)
        bus.clock.now += 2
    assert bus.stock(item) == 10
    assert reasons(bus) == []


def test_a_restock_jump_applies_at_once_and_a_small_rise_waits(bus: Bus):
    item = bus.item(stock_quantity=3)
    bus.scale("s1", item)
    bus.count("s1", item, 8)  # +5: the restock threshold
    assert bus.stock(item) == 8
    bus.count("s1", item, 12)  # +4: waits like any change
    assert bus.stock(item) == 8
    bus.clock.now += 5
    bus.count("s1", item, 12)
    assert bus.stock(item) == 12
    assert reasons(bus) == ["restock", "scale"]


def test_a_scale_flapping_around_the_threshold_for_a_minute_alerts_once(bus: Bus):
    item = bus.item(stock_quantity=6, low_stock_threshold=4, low_stock_clear_level=6)
    bus.scale("s1", item)
    # A minute of readings, one a second: counts that hold 6 s (past the 5 s dwell) going 5, 4, 5, 4, 6, ...
    # with one-second blips to 7 (above the clear level) that must not re-arm the alarm.
    pattern = [5] * 6 + [4] * 6 + [7] + [5] * 6 + [3] * 6 + [7] + [6] * 6 + [4] * 6
    for units in (pattern * 2)[:60]:
        bus.count("s1", item, units)
        bus.clock.now += 1
    stocks = [e["data"]["item"]["stock_quantity"] for e in bus.events("inventory_updated")][1:]
    assert 4 in stocks and 5 in stocks and 6 in stocks and 3 in stocks  # the flaps did reach stock
    assert 7 not in stocks  # the blips did not
    assert len(bus.events("low_stock")) == 1
    assert len(bus.notes("low_stock")) == 1


def test_above_the_clear_level_the_alarm_rearms(bus: Bus):
    item = bus.item(stock_quantity=6, low_stock_threshold=4, low_stock_clear_level=6)
    bus.scale("s1", item)
    for units in (4, 7, 4):
        for _ in range(2):
            bus.count("s1", item, units)
            bus.clock.now += 5
    assert len(bus.events("low_stock")) == 2


def test_a_silent_scale_goes_stale_once_and_changes_no_stock(bus: Bus):
    item = bus.item(stock_quantity=10, low_stock_threshold=2)
    bus.scale("s1", item)
    bus.count("s1", item, 10)
    bus.count("s1", item, 1)  # a change waiting out its dwell when the scale dies
    bus.clock.now += 30
    bus.sweep()
    assert not bus.view("s1").stale  # 30 s is three heartbeats, not more
    bus.clock.now += 0.5
    bus.sweep()
    bus.clock.now += 600
    bus.sweep()
    view = bus.view("s1")
    assert view.stale and view.candidate is None
    assert bus.notes("scale_stale") == ["Scale s1 stopped reporting"]
    assert bus.stock(item) == 10
    assert bus.events("low_stock") == []


def test_the_next_reading_un_stales_it_once_and_the_dwell_starts_again(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    bus.count("s1", item, 10)
    bus.clock.now += 31
    bus.sweep()
    bus.count("s1", item, 9)
    assert not bus.view("s1").stale
    assert bus.stock(item) == 10
    bus.clock.now += 5
    bus.count("s1", item, 9)
    assert bus.stock(item) == 9
    assert len(bus.notes("scale_back")) == 1
    assert len(bus.notes("scale_stale")) == 1


def test_replays_are_refused_and_remembered_nowhere(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    bus.count("s1", item, 10, seq=7)
    assert bus.refused("s1", item, TARE + 10 * UNIT, seq=7) == "replayed"
    assert bus.refused("s1", item, TARE + 10 * UNIT, seq=3) == "replayed"
    old = (bus.wall - timedelta(seconds=1)).isoformat()
    assert bus.refused("s1", item, TARE + 10 * UNIT, seq=8, boot_id="boot-2", ts=old) == "replayed"
    ancient = (bus.wall - timedelta(hours=1)).isoformat()
    assert bus.refused("s1", item, TARE + 10 * UNIT, seq=8, ts=ancient) == "replayed"
    assert bus.view("s1").seq == 7
    bus.count("s1", item, 10, seq=8)
    bus.count("s1", item, 10, seq=1, boot_id="boot-2")  # a restarted scale counts from 1 again
    assert bus.view("s1").boot_id == "boot-2"


def test_items_a_scale_cannot_count_are_unknown(bus: Bus):
    item = bus.item(stock_quantity=10)
    untracked = bus.item(enable_stock_tracking=False)
    unweighed = bus.item(unit_weight_grams=None)
    elsewhere = bus.item(rid=bus.other_rid)
    free = bus.scale("free", None)
    bound = bus.scale("bound", item)
    for other in (untracked, unweighed, elsewhere, 999_999):
        assert bus.refused(free, other, 3000) == "unknown_item"
    assert bus.refused(bound, untracked, 3000) == "unknown_item"
    bus.count(free, item, 10)
    assert bus.rules.view("bound") is None


def test_weights_are_checked_against_unit_and_tare(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    assert bus.refused("s1", item, TARE + 9.5 * UNIT) == "not_whole"
    assert bus.refused("s1", item, TARE - UNIT) == "bad_weight"  # less than the empty container
    assert bus.refused("s1", item, -50) == "bad_weight"
    assert bus.refused("s1", item, 2e6) == "bad_weight"
    assert bus.refused("s1", item, "heavy") == "bad_weight"
    assert bus.rules.view("s1") is None
    assert bus.stock(item) == 10


def test_after_a_restart_a_scale_that_was_in_use_and_never_returns_goes_stale(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    bus.scale("never-used", item)
    with UnitOfWork(bus.engine) as uow:
        device = uow.session.get(Device, "s1")
        assert device is not None
        device.last_seen = datetime.now(UTC)
        uow.session.add(device)
        uow.commit()
    bus.sweep()
    bus.clock.now += 31
    bus.sweep()
    assert bus.view("s1").stale
    assert bus.rules.view("never-used") is None
    assert len(bus.notes("scale_stale")) == 1


def test_revoked_scales_are_not_watched(bus: Bus):
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    bus.count("s1", item, 10)
    with UnitOfWork(bus.engine) as uow:
        devices.revoke_device(uow, bus.rid, "s1")
        uow.commit()
    bus.clock.now += 31
    bus.sweep()
    assert bus.rules.view("s1") is None
    assert bus.notes("scale_stale") == []


def test_ingest_and_sweeper_threads_do_not_deadlock(tmp_path: Path):
    """The handler runs inside the ingest's write transaction and the sweep takes the lock only inside
    its own: readings and stale marks racing each other on a real clock all complete."""
    bus = Bus(tmp_path, scale_heartbeat_seconds=0.001, scale_stale_missed=1, scale_dwell_seconds=0)
    bus.rules.clock = time.monotonic
    item = bus.item(stock_quantity=10)
    bus.scale("s1", item)
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweeping() -> None:
        while not stop.is_set():
            try:
                bus.sweep()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    def reading() -> None:
        try:
            for n in range(150):
                bus.wall = datetime.now(UTC)
                bus.count("s1", item, 10 + n % 2)
                time.sleep(0.002)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    sweeper, ingest = threading.Thread(target=sweeping, daemon=True), threading.Thread(target=reading, daemon=True)
    sweeper.start()
    ingest.start()
    ingest.join(120)  # a deadlock never ends; a slow machine only takes longer
    stop.set()
    sweeper.join(30)
    assert not ingest.is_alive() and not sweeper.is_alive(), "the ingest and the sweeper deadlocked"
    assert errors == []
    assert bus.notes("scale_stale") and bus.notes("scale_back")
    assert len(bus.notes("scale_back")) <= len(bus.notes("scale_stale"))
