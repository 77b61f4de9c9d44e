"""Stock scales through the whole bus: real broker, real ingest and sweeper, real SQLite, real MQTT clients,
and the real `orderbus device scale` agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bridge.scales import ScaleReadings
from core.models import MenuItem
from core.unit_of_work import UnitOfWork
from tests.support import Received, Stack, Subscriber, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")
UNIT = 250.0  # grams of one item
TARE = 400.0  # grams of the empty container


def rejected(reason: str) -> float:
    """orderbus_ingest_rejected_total{reason} in this process (the stack runs in it)."""
    return REGISTRY.get_sample_value("orderbus_ingest_rejected_total", {"reason": reason}) or 0.0


def now_iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeClock:
    """Monotonic seconds the test moves by hand: a minute of scale readings without a minute of waiting."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Bench:
    """A running bus with restaurants A and B, a menu in each, and the MQTT clients a test opened."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.rid = stack.add_restaurant("A", "a@example.com")
        self.other_rid = stack.add_restaurant("B", "b@example.com")
        self._menus: dict[int, int] = {}
        self.clients: list[Subscriber] = []

    def admin(self, rid: int | None = None) -> Any:
        rid = rid or self.rid
        return self.stack.http(self.stack.api_token(f"admin-{rid}", "admin", rid))

    def item(self, rid: int | None = None, **fields: Any) -> int:
        """A stock-tracked item weighed in units of UNIT grams, created through the API."""
        rid = rid or self.rid
        admin = self.admin(rid)
        if rid not in self._menus:
            self._menus[rid] = admin.post(f"/restaurants/{rid}/menus", json={"name": "Dinner"}).json()["id"]
        body = {"menu_id": self._menus[rid], "name": "Buns", "price_cents": 300, "enable_stock_tracking": True}
        body |= {"unit_weight_grams": UNIT} | fields
        response = admin.post(f"/restaurants/{rid}/menu-items", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def scale(self, device_id: str, item_id: int | None, tare: float = TARE) -> FakeScale:
        token = self.stack.add_device(self.rid, device_id, "scale", item_id=item_id, tare_grams=tare)
        scale = FakeScale(self, device_id, item_id, token)
        self.clients.append(scale.client)
        return scale

    def watch(self, *topics: str) -> Subscriber:
        """A dashboard of restaurant A subscribed to `restaurant/{rid}/<topic>` for each topic."""
        client_id = f"dash-{len(self.clients)}"
        token = self.stack.mqtt_token(client_id, "staff", self.rid)
        watcher = Subscriber(self.stack.settings.mqtt_port, client_id, token)
        self.clients.append(watcher)
        assert watcher.connect() == 0
        for topic in topics:
            assert watcher.subscribe(f"restaurant/{self.rid}/{topic}") == 1
        return watcher

    @property
    def rules(self) -> ScaleReadings:
        """The bus's scale rules object (to read its view of a scale, or to give it a test clock)."""
        assert self.stack.runtime.rules is not None
        handler = self.stack.runtime.rules.handlers[("readings", "scale")]
        assert isinstance(handler, ScaleReadings)
        return handler

    def stock(self, item_id: int) -> int:
        with UnitOfWork(self.stack.parts.engine) as uow:
            item = uow.session.get(MenuItem, item_id)
            assert item is not None
            return item.stock_quantity

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        found = self.admin().get(f"/restaurants/{self.rid}/events", params={"limit": 1000}).json()
        return [e for e in found if type_ is None or e["type"] == type_]

    def notes(self, kind: str) -> list[dict[str, Any]]:
        return [
            n for n in self.admin().get(f"/restaurants/{self.rid}/notifications").json()["data"] if n["kind"] == kind
        ]

    def close(self) -> None:
        for client in self.clients:
            client.close()


class FakeScale:
    """A scale as the bus sees one: a real MQTT client with the scale's token, publishing what the test says."""

    def __init__(self, bench: Bench, device_id: str, item_id: int | None, token: str) -> None:
        self.bench, self.device_id, self.item_id = bench, device_id, item_id
        self.seq = 0
        self.boot_id = f"boot-{device_id}"
        self.client = Subscriber(bench.stack.settings.mqtt_port, device_id, token)
        assert self.client.connect() == 0
        assert self.client.subscribe(self.topic("commands")) == 1

    def topic(self, leaf: str) -> str:
        return f"restaurant/{self.bench.rid}/devices/{self.device_id}/{leaf}"

    def reading(self, units: float | None = None, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        body: dict[str, Any] = {"item_id": self.item_id, "seq": self.seq, "boot_id": self.boot_id, "ts": now_iso()}
        if units is not None:
            body["grams"] = TARE + units * UNIT
        return body | fields

    def send(self, units: float | None = None, **fields: Any) -> dict[str, Any]:
        body = self.reading(units, **fields)
        self.publish(json.dumps(body).encode())
        return body

    def count(self, units: float, **fields: Any) -> None:
        """Send a reading and wait until the bus accepted it."""
        body = self.send(units, **fields)
        self.accepted(body["seq"])

    def accepted(self, seq: int) -> None:
        wait_for(lambda: (view := self.bench.rules.view(self.device_id)) is not None and view.seq == seq)

    def publish(self, payload: bytes) -> None:
        self.client.client.publish(self.topic("readings"), payload, qos=1).wait_for_publish(5)

    def reply(self, timeout: float = 10.0) -> dict[str, Any]:
        message: Received = self.client.collect(1, timeout)[0]
        return message.json()


def next_event(watcher: Subscriber, type_: str, reason: str | None = None) -> dict[str, Any]:
    """The next event of that type (and inventory reason); others on the channel are skipped: the relay
    may still be publishing what set the test up (an item's `created`, a device's `device_updated`)."""
    while True:
        envelope = watcher.collect(1, timeout=10)[0].json()
        if envelope["type"] == type_ and (reason is None or envelope["data"].get("reason") == reason):
            return envelope


def next_notification(watcher: Subscriber) -> dict[str, Any]:
    return next_event(watcher, "notification")["data"]["notification"]


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Callable[..., Bench]]:
    """`bus(**settings)` starts a stack with those scale settings; everything is closed after the test."""
    made: list[tuple[Stack, Bench]] = []

    def start(**settings: Any) -> Bench:
        stack = Stack(tmp_path / f"data-{len(made)}", **settings).start()
        bench = Bench(stack)
        made.append((stack, bench))
        return bench

    yield start
    for stack, bench in made:
        bench.close()
        stack.stop()


def test_a_reading_through_the_bus_changes_stock_and_an_inventory_updated_event_follows(bus):
    bench = bus(scale_dwell_seconds=0.5)
    item = bench.item(stock_quantity=10)
    scale = bench.scale("scale-1", item)
    dashboard = bench.watch("inventory")
    scale.count(10)  # the stock as it is: nothing to do
    started = time.monotonic()
    wait_for(lambda: scale.send(7) and bench.stock(item) == 7, interval=0.1)  # repeated, as a heartbeat
    assert time.monotonic() - started >= 0.5  # not before the dwell
    update = next_event(dashboard, "inventory_updated", "scale")
    assert update["data"]["item"]["id"] == item and update["data"]["item"]["stock_quantity"] == 7
    assert [e["data"]["item"]["stock_quantity"] for e in bench.events("inventory_updated")] == [10, 7]
    assert bench.stack.device("scale-1").last_seen is not None
    ledger = bench.admin().get(f"/restaurants/{bench.rid}/inventory/{item}/movements").json()
    assert [(m["kind"], m["stock_delta"], m["stock_after"], m["actor"]) for m in ledger["data"]] == [
        ("counted", -3, 7, "device:scale-1"),  # the scale, named by its device id
        ("counted", 10, 10, f"admin-{bench.rid}"),  # the opening stock, by the token that created the item
    ]


def test_a_restock_jump_is_applied_at_once(bus):
    bench = bus(scale_dwell_seconds=60, scale_restock_units=5)
    item = bench.item(stock_quantity=2)
    scale = bench.scale("scale-1", item)
    dashboard = bench.watch("inventory")
    scale.send(12)
    update = next_event(dashboard, "inventory_updated", "restock")
    assert update["data"]["item"]["stock_quantity"] == 12
    assert bench.stock(item) == 12
    scale.count(14)  # +2 is no restock: it waits its (long) dwell
    assert bench.stock(item) == 12


def test_a_scale_flapping_around_its_threshold_for_a_minute_raises_one_alert(bus):
    """A minute of readings, one a second by the bus's clock, counts holding past the dwell and falling
    and rising around the low-stock threshold (4) without ever rising above the clear level (6)."""
    bench = bus(scale_dwell_seconds=3, scale_heartbeat_seconds=10, scale_stale_missed=3)
    clock = FakeClock()
    bench.rules.clock = clock
    item = bench.item(stock_quantity=6, low_stock_threshold=4, low_stock_clear_level=6)
    scale = bench.scale("scale-1", item)
    alerts = bench.watch("inventory/low_stock", "notifications")
    pattern = [5] * 4 + [4] * 4 + [7] + [5] * 4 + [3] * 4 + [7] + [6] * 4 + [4] * 4 + [5] * 4
    for units in (pattern * 3)[:60]:
        scale.count(units)
        clock.now += 1
    stocks = [e["data"]["item"]["stock_quantity"] for e in bench.events("inventory_updated")]
    assert {3, 4, 5, 6} <= set(stocks)  # the flapping did reach stock, again and again
    assert stocks.count(4) >= 3
    assert 7 not in stocks  # one-second blips above the clear level did not
    low = [e for e in bench.events() if e["type"] == "low_stock"]
    assert len(low) == 1 and low[0]["data"]["available_quantity"] == 4
    assert len(bench.notes("low_stock")) == 1
    received = [m.json() for m in alerts.drain()]
    assert [m["type"] for m in received if m["type"] == "low_stock"] == ["low_stock"]
    assert [m["data"]["notification"]["kind"] for m in received if m["type"] == "notification"] == ["low_stock"]


def test_a_stale_scale_raises_no_stock_alert(bus):
    bench = bus(scale_dwell_seconds=0.3, scale_heartbeat_seconds=0.5, scale_stale_missed=2)
    item = bench.item(stock_quantity=5, low_stock_threshold=4)
    scale = bench.scale("scale-1", item)
    notifications = bench.watch("notifications")
    for _ in range(3):
        scale.count(5)
    scale.count(0)  # an empty reading, once, just before the scale stops: must not become stock
    scale.client.close()  # the scale goes silent
    stale = next_notification(notifications)
    assert stale["kind"] == "scale_stale" and "scale-1" in stale["title"]
    assert bench.rules.view("scale-1").stale
    time.sleep(2.5)  # more sweeps and stale periods: nothing more may happen
    assert len(bench.notes("scale_stale")) == 1
    assert bench.stock(item) == 5
    assert bench.events("low_stock") == []
    assert [e["data"]["reason"] for e in bench.events("inventory_updated")] == ["created"]


def test_a_stale_scale_that_speaks_again_is_back_once(bus):
    bench = bus(scale_dwell_seconds=0.2, scale_heartbeat_seconds=0.3, scale_stale_missed=2)
    item = bench.item(stock_quantity=5)
    scale = bench.scale("scale-1", item)
    scale.count(5)
    wait_for(lambda: bench.notes("scale_stale"))
    scale.count(5)
    scale.count(5)
    assert not bench.rules.view("scale-1").stale
    assert len(bench.notes("scale_back")) == 1
    assert bench.stock(item) == 5


def test_bad_input_gets_an_error_reply_with_the_reason_is_counted_and_changes_nothing(bus):
    bench = bus(scale_dwell_seconds=0)
    item = bench.item(stock_quantity=10, low_stock_threshold=20)
    untracked = bench.item(enable_stock_tracking=False)
    elsewhere = bench.item(rid=bench.other_rid)
    loose = bench.scale("scale-loose", None)  # bound to no item: the restaurant check is what refuses
    bound = bench.scale("scale-bound", item)
    bound.count(10)
    last_good = bound.seq
    before = bench.events()
    big = bound.reading(10, note="x" * 5000)
    cases: list[tuple[str, FakeScale, bytes | dict[str, Any], str]] = [
        ("not JSON", bound, b"5230 grams", "not_json"),
        ("not an object", bound, b"[5230]", "bad_type"),
        ("item as a string", bound, bound.reading(10, item_id=str(item)), "bad_type"),
        ("seq as a string", bound, bound.reading(10, seq="99"), "bad_type"),
        ("no boot id", bound, {k: v for k, v in bound.reading(10).items() if k != "boot_id"}, "bad_type"),
        ("ts not a time", bound, bound.reading(10, ts="tuesday"), "bad_type"),
        ("grams as a string", bound, bound.reading(grams="5000"), "bad_weight"),
        ("grams as a bool", bound, bound.reading(grams=True), "bad_weight"),
        ("negative weight", bound, bound.reading(grams=-500), "bad_weight"),
        ("absurd weight", bound, bound.reading(grams=2_000_000), "bad_weight"),
        ("less than the container", bound, bound.reading(grams=TARE - 1.2 * UNIT), "bad_weight"),
        ("between two counts", bound, bound.reading(9.5), "not_whole"),
        ("another item than the scale's", bound, bound.reading(10, item_id=untracked), "unknown_item"),
        ("unknown item", loose, loose.reading(10, item_id=987_654), "unknown_item"),
        ("item of another restaurant", loose, loose.reading(10, item_id=elsewhere), "unknown_item"),
        ("untracked item", loose, loose.reading(10, item_id=untracked), "unknown_item"),
        ("replayed seq", bound, bound.reading(3, seq=last_good), "replayed"),
        ("replayed old reading", bound, bound.reading(3, ts=now_iso(-timedelta(hours=2))), "replayed"),
        ("from the future", bound, bound.reading(3, ts=now_iso(timedelta(hours=2))), "replayed"),
        ("oversized", bound, big, "too_large"),
    ]
    for name, scale, payload, reason in cases:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        count = rejected(reason)
        scale.publish(raw)
        reply = scale.reply()
        assert reply["type"] == "error", name
        assert reply["reason"] == reason, (name, reply)
        assert reply["topic"] == scale.topic("readings"), name
        assert reply["detail"], name
        assert rejected(reason) == count + 1, name
    assert bench.stock(item) == 10
    assert bench.events() == before
    assert bench.rules.view("scale-bound").seq == last_good
    assert bench.rules.view("scale-loose") is None
    bound.count(10)  # and the scale still works


@pytest.fixture
def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERBUS_")}
    return env | {"ORDERBUS_SCALE_HEARTBEAT_SECONDS": "0.2", "PYTHONUNBUFFERED": "1"}


class Agent:
    """`orderbus device scale` as a child process, its stdout and stderr collected as they come."""

    def __init__(self, bench: Bench, token: str, item_id: int, env: dict[str, str], *args: str) -> None:
        command = [
            ORDERBUS,
            "device",
            "scale",
            "--item",
            str(item_id),
            "--mqtt-port",
            str(bench.stack.settings.mqtt_port),
        ]
        self.process = subprocess.Popen(
            [*command, *args],
            env=env | {"ORDERBUS_DEVICE_TOKEN": token},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=lambda s=stream, got=lines: got.extend(iter(s.readline, "")), daemon=True).start()

    def write(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


def test_the_real_agent_on_stdin_counts_stock_reports_bad_lines_and_shows_refusals(bus, agent_env):
    bench = bus(scale_dwell_seconds=0.5)
    item = bench.item(stock_quantity=10)
    token = bench.stack.add_device(bench.rid, "scale-agent", "scale", item_id=item, tare_grams=TARE)
    status = bench.watch("inventory")
    agent = Agent(bench, token, item, agent_env, "--stdin")
    try:
        agent.write(f"{TARE + 10 * UNIT}\nten buns\n{TARE + 8 * UNIT + 20}\n")
        wait_for(lambda: bench.stock(item) == 8)  # the heartbeat repeats 8 until the dwell is over
        assert next_event(status, "inventory_updated", "scale")["data"]["item"]["stock_quantity"] == 8
        assert any("line 2: not a number of grams: 'ten buns'; skipped" in line for line in agent.err)
        agent.write(f"{TARE + 8.5 * UNIT}\n")  # half a bun: the bus refuses it and the agent says so
        wait_for(lambda: any("not_whole" in line for line in agent.err))
        assert bench.stock(item) == 8
        view = bench.rules.view("scale-agent")
        assert view is not None and view.boot_id == bench.stack.device("scale-agent").boot_id
        assert agent.process.stdin is not None
        agent.process.stdin.close()  # end of input: the agent sends what it has and leaves cleanly
        assert agent.process.wait(timeout=15) == 0
    finally:
        agent.stop()
    wait_for(lambda: bench.stack.device("scale-agent").presence == "offline")
    assert any(line.startswith("reading 2420 g") for line in agent.out)


def test_the_real_agent_with_its_simulated_load_cell_follows_items_taken_and_tare(bus, agent_env):
    bench = bus(scale_dwell_seconds=0.5)
    item = bench.item(stock_quantity=10)
    token = bench.stack.add_device(bench.rid, "scale-sim", "scale", item_id=item, tare_grams=0)
    agent = Agent(bench, token, item, agent_env, "--grams", str(10 * UNIT))
    try:
        wait_for(lambda: any(line.startswith("reading ") for line in agent.out))
        agent.write(f"-{2 * UNIT}\n")  # two buns taken off the platform
        wait_for(lambda: bench.stock(item) == 8, timeout=15)
        service_token = bench.stack.mqtt_token("test-commands", "service", None)
        service = Subscriber(bench.stack.settings.mqtt_port, "test-commands", service_token)
        bench.clients.append(service)
        assert service.connect() == 0
        service.client.publish(
            f"restaurant/{bench.rid}/devices/scale-sim/commands", json.dumps({"type": "tare"}), qos=1
        ).wait_for_publish(5)
        wait_for(lambda: any(line.startswith("tared") for line in agent.err))
        wait_for(lambda: bench.stock(item) == 0, timeout=15)  # zeroed with the buns on it: it counts none
        assert agent.stop() == 0
    finally:
        agent.stop()
    wait_for(lambda: bench.stack.device("scale-sim").presence == "offline")
