"""One owner per transaction: services never commit; one device message, one demo seeding each
commit once. Real SQLite files; commits are counted on the engine, where they really happen."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, event
from sqlmodel import col, select

from bridge.handlers import device_rules
from bridge.ingest import Ingest
from config.settings import Settings
from core.commands import MenuItemIn
from core.db import create_schema, make_engine
from core.demo import ensure_demo
from core.models import Device, Menu, MenuItem, OutboxEvent, Restaurant
from core.services import menu
from core.unit_of_work import UnitOfWork

SERVICES = Path(__file__).resolve().parents[2] / "core" / "services"
UNIT = 100.0


def test_no_service_commits():
    """A service adds to its caller's unit of work; committing is the caller's (request, message, sweep)."""
    offenders = []
    for path in sorted(SERVICES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_check_above_finds_a_commit():
    tree = ast.parse("def f(uow):\n    uow.commit()\n")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "commit"]
    assert len(calls) == 1


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'bus.db'}")
    create_schema(engine)
    return engine


def count_commits(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    return commits


@pytest.fixture
def ingest(engine: Engine, tmp_path: Path) -> Iterator[tuple[Ingest, list[int]]]:
    """The bus's ingest and device rules over a real database; its MQTT client never connects (replies go nowhere)."""
    settings = Settings(data_dir=tmp_path, scale_dwell_seconds=0.0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="orderbus-ingest-test")
    woken: list[int] = []
    yield Ingest(engine, client, "127.0.0.1", 1, device_rules(settings).handlers, lambda: woken.append(1)), woken


def scale_with_item(engine: Engine, stock: int) -> tuple[int, int]:
    with UnitOfWork(engine) as uow:
        restaurant = Restaurant(name="A")
        uow.session.add(restaurant)
        uow.session.flush()
        rid = restaurant.id
        assert rid is not None
        menu_row = Menu(restaurant_id=rid, name="Main")
        uow.session.add(menu_row)
        uow.session.flush()
        assert menu_row.id is not None
        body = MenuItemIn(
            menu_id=menu_row.id, name="Buns", price_cents=100, enable_stock_tracking=True, stock_quantity=stock
        )
        item = menu.create_item(uow, rid, body.model_copy(update={"unit_weight_grams": UNIT}))
        uow.session.add(Device(id="scale-1", restaurant_id=rid, kind="scale", name="Scale", item_id=item.id))
        uow.commit()
        assert item.id is not None
        return rid, item.id


def test_a_scale_reading_is_one_transaction(engine: Engine, ingest: tuple[Ingest, list[int]]):
    """The count, its events and the scale's last_seen are committed together, once."""
    bus, woken = ingest
    rid, item_id = scale_with_item(engine, stock=10)
    with UnitOfWork(engine) as uow:
        events_before = len(uow.session.exec(select(OutboxEvent)).all())
    commits = count_commits(engine)
    reading = {"item_id": item_id, "grams": 7 * UNIT, "seq": 1, "boot_id": "b1", "ts": datetime.now(UTC).isoformat()}
    bus.process(f"restaurant/{rid}/devices/scale-1/readings", json.dumps(reading).encode())
    assert len(commits) == 1
    assert woken == [1]  # the commit wrote events: the relay is woken after it
    with UnitOfWork(engine) as uow:
        item = uow.session.get(MenuItem, item_id)
        device = uow.session.get(Device, "scale-1")
        assert item is not None and device is not None
        assert item.stock_quantity == 7
        assert device.last_seen is not None
        types = [row.type for row in uow.session.exec(select(OutboxEvent).order_by(col(OutboxEvent.seq)))]
    assert types[events_before:] == ["inventory_updated"]


def test_demo_seeding_commits_once(engine: Engine, tmp_path: Path):
    commits = count_commits(engine)
    woken: list[int] = []
    demo = ensure_demo(engine, tmp_path, lambda: woken.append(1))
    assert len(commits) == 1 and woken == [1]
    assert len(demo.devices) == 4
    again = ensure_demo(engine, tmp_path)  # seeded once: the second run only reads
    assert again.restaurant_id == demo.restaurant_id and len(commits) == 1
