"""Several `orderbus bridge` processes for availability (bridge/lease.py): one holds the lease and runs
the relay, the ingest and the sweeper; the others stand by with no MQTT connection. Real processes: a
separate `orderbus broker`, two bridges, orders committed through the service layer in a burst, on
PostgreSQL (an advisory lock; each bridge with a data directory of its own, so nothing but the lock
keeps them apart) and on SQLite (two bridges on one data directory: the lock file).

Faults: kill -9 of the active bridge mid-burst, and its lease connection terminated by an administrator.
What must hold (docs/ops.md, "Several bridges"): every restaurant's subscriber gets every seq, nothing
missing; arrivals per restaurant are in seq order except that the dead relay's last unstamped batch may
come again (at least once, consumers dedupe by event id), so after dropping exact duplicates the
stream is strictly increasing and it steps back at most once per handover; a device message sent
while no bridge was active is applied exactly once by the next holder."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select

from config.settings import Settings
from core.commands import OrderIn, OrderItemIn
from core.db import make_engine
from core.models import OutboxEvent, Restaurant
from core.services import orders
from core.tokens import TokenService
from core.unit_of_work import UnitOfWork
from core.wake import SOCKET_NAME, SocketWake
from tests import postgres
from tests.support import Proc, Site, Stack, Subscriber, free_port, fresh_database, wait_for

pytestmark = pytest.mark.e2e
ORDERBUS = str(Path(sys.executable).parent / "orderbus")
RESTAURANTS = 3
BURST = 120  # orders, round robin over the restaurants
WAKE_BOUND_SECONDS = 2.0  # the relay's idle poll is 5 s: an order found only by polling misses this


@dataclass
class Bus(Site):
    """A broker process, bridge processes, and the test's own engine on the same database."""

    root: Path
    database_url: str | None  # None: SQLite in `root/data`, shared by every process
    mqtt_port: int = field(default_factory=free_port)
    broker_metrics: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = secrets.token_hex(32)
        self.tokens = TokenService(self.key.encode())
        self.settings = Settings(data_dir=self.root / "data", database_url=self.database_url)
        if self.database_url is None:
            fresh_database(self.settings)
        else:
            upgrade = subprocess.run(
                [ORDERBUS, "db", "upgrade", "--database-url", self.database_url], capture_output=True, text=True
            )
            assert upgrade.returncode == 0, upgrade.stderr
        self.engine = make_engine(self.settings.db_url)
        # on SQLite a commit here wakes the active relay through the data directory's socket, as the API
        # does; on PostgreSQL the commit's NOTIFY does
        self.wake = SocketWake(self.settings.data_dir / SOCKET_NAME) if self.database_url is None else None

    def start(self, command: str, data_dir: str = "data", **env: str) -> Proc:
        args = {
            "broker": ["--mqtt-port", str(self.mqtt_port), "--ws-port", str(free_port())],
            "bridge": ["--mqtt-port", str(self.mqtt_port)],
        }[command]
        env = {"ORDERBUS_JWT_KEY": self.key, **env}
        if self.database_url is not None:
            env["ORDERBUS_DATABASE_URL"] = self.database_url
        if command == "broker":
            env["ORDERBUS_METRICS_PORT"] = str(self.broker_metrics)
        name = f"{command}-{len(self.procs)}"
        argv = [command, "--data-dir", str(self.root / data_dir), *args]
        proc = Proc(name, argv, env, self.root / f"{name}.log")
        self.procs.append(proc)
        return proc.start()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.wake is not None:
            self.wake.close()
        self.engine.dispose()

    def seed(self) -> tuple[list[int], dict[int, int]]:
        """Restaurants with one item each (their events go out as they commit)."""
        rids = [self.add_restaurant(f"HA {n}", f"ha{n}@example.com") for n in range(RESTAURANTS)]
        return rids, {rid: self.add_menu_item(rid, "soup") for rid in rids}

    def place(self, rid: int, item: int) -> int:
        with UnitOfWork(self.engine, self.wake) as uow:
            view = orders.place_order(uow, rid, OrderIn(items=[OrderItemIn(menu_item_id=item, quantity=1)]))
            uow.commit()
        assert view.order.id is not None
        return view.order.id

    def watcher(self) -> Watch:
        subscriber = Subscriber(self.mqtt_port, "ha-watch", self.mqtt_token("ha-watch", "super_admin", None))
        assert subscriber.connect() == 0
        assert subscriber.subscribe("restaurant/#") == 1
        return Watch(subscriber)

    def service_connections(self) -> tuple[float, float]:
        """(connected now, CONNACKs so far) of the bus's own clients, as the broker counts them."""
        text = httpx.get(f"http://127.0.0.1:{self.broker_metrics}/metrics", timeout=10).text
        now = total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("role") != "service":
                    continue
                if sample.name == "orderbus_broker_connections":
                    now += sample.value
                elif sample.name == "orderbus_broker_connects_total":
                    total += sample.value
        return now, total

    def event_seqs(self) -> dict[int, int]:
        with UnitOfWork(self.engine) as uow:
            return {r.id: r.event_seq for r in uow.session.exec(select(Restaurant)) if r.id is not None}

    def unpublished(self) -> int:
        with UnitOfWork(self.engine) as uow:
            return len(uow.session.exec(select(OutboxEvent.id).where(col(OutboxEvent.published_at).is_(None))).all())


class Watch:
    """Every event envelope a super_admin subscriber receives, per restaurant, in arrival order."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.arrivals: dict[int, list[tuple[int, str]]] = {}  # rid → [(seq, event id)]
        self._lock = threading.Lock()
        previous = subscriber.client.on_message
        assert previous is not None  # the Subscriber's own recorder

        def on_message(client, userdata, message) -> None:
            previous(client, userdata, message)
            # each event has one message on its channel or tickets topic; the retained state topics
            # (open orders, stock items, presence) are copies, also sent again by every retained rebuild
            if message.retain or any(part in message.topic for part in ("/open/", "/items/", "/devices/")):
                return
            if not message.payload:
                return
            body = json.loads(message.payload)
            with self._lock:
                self.arrivals.setdefault(body["restaurant_id"], []).append((body["seq"], body["id"]))

        subscriber.client.on_message = on_message

    def seqs(self, rid: int) -> list[int]:
        with self._lock:
            return [seq for seq, _ in self.arrivals.get(rid, [])]

    def past(self, rid: int, seq: int) -> bool:
        """An event of this restaurant after `seq` has arrived."""
        return max(self.seqs(rid), default=0) > seq

    def complete(self, expected: dict[int, int]) -> bool:
        return all(set(self.seqs(rid)) >= set(range(1, last + 1)) for rid, last in expected.items())

    def check(self, expected: dict[int, int], handovers: int) -> int:
        """Every seq, in order after dropping exact duplicates, stepping back at most once per handover;
        returns how many duplicates arrived."""
        duplicates = 0
        with self._lock:
            arrivals = {rid: list(got) for rid, got in self.arrivals.items()}
        for rid, last in expected.items():
            got = arrivals.get(rid, [])
            seen: dict[str, int] = {}
            first_copies = []
            for seq, event_id in got:
                if event_id in seen:
                    assert seen[event_id] == seq, f"restaurant {rid}: event {event_id} came with two seqs"
                    duplicates += 1
                    continue
                seen[event_id] = seq
                first_copies.append(seq)
            assert first_copies == list(range(1, last + 1)), f"restaurant {rid}: {first_copies}"
            steps_back = sum(1 for a, b in pairwise(got) if b[0] <= a[0])
            assert steps_back <= handovers, f"restaurant {rid}: {[seq for seq, _ in got]}"
        return duplicates

    def close(self) -> None:
        self.subscriber.close()


@pytest.fixture
def pg_bus(tmp_path: Path) -> Iterator[Bus]:
    with postgres.fresh_database("ha") as url:
        bus = Bus(tmp_path, url)
        try:
            yield bus
        finally:
            bus.close()


@pytest.fixture
def sqlite_bus(tmp_path: Path) -> Iterator[Bus]:
    bus = Bus(tmp_path, None)
    try:
        yield bus
    finally:
        bus.close()


def active_and_standby(first: Proc, second: Proc) -> tuple[Proc, Proc]:
    """Which bridge took the lease: exactly one says it is active, the other that it stands by."""
    wait_for(lambda: sum("bridge active" in p.output() for p in (first, second)) == 1, timeout=15)
    active, standby = (first, second) if "bridge active" in first.output() else (second, first)
    wait_for(lambda: "bridge standby: another holds the lease" in standby.output(), timeout=15)
    return active, standby


def assert_standby_holds_no_connection(bus: Bus, standby: Proc) -> None:
    """The active bridge's relay and ingest are the bus's only connections, and stay so: a standby that
    connected (or fought over the client ids) would add CONNACKs every second."""
    wait_for(lambda: bus.service_connections()[0] == 2, timeout=15)
    _, connects = bus.service_connections()
    time.sleep(3)  # the fight this replaces took each other's session every second
    assert bus.service_connections() == (2, connects)
    assert "orderbus-relay" not in standby.output() and "orderbus-ingest" not in standby.output()


def burst(bus: Bus, rids: list[int], items: dict[int, int], at: int, then: Callable[[], None]) -> None:
    """BURST orders round robin over the restaurants; `then` runs (in another thread) after `at` of them."""
    fault: threading.Thread | None = None
    for n in range(BURST):
        if n == at:
            fault = threading.Thread(target=then)
            fault.start()
        rid = rids[n % len(rids)]
        bus.place(rid, items[rid])
        time.sleep(0.01)  # a busy night's pace, and time for the relay to be mid-batch at the fault
    assert fault is not None
    fault.join(30)


def bump(tablet: Subscriber, rid: int, order_id: int, request_id: str) -> None:
    message = {"type": "bumped", "order_id": order_id, "to": "preparing", "request_id": request_id}
    info = tablet.client.publish(f"restaurant/{rid}/devices/kds-1/events", json.dumps(message), qos=1)
    info.wait_for_publish(10)


def status_changes(bus: Bus, order_id: int) -> list[str]:
    """The order's `order_updated` events, in seq order: each one a change some command made."""
    with UnitOfWork(bus.engine) as uow:
        envelopes = uow.session.exec(
            select(OutboxEvent.envelope).where(OutboxEvent.type == "order_updated").order_by(col(OutboxEvent.id))
        ).all()
    return [e["data"]["order"]["status"] for e in envelopes if e["data"]["order"]["id"] == order_id]


def kill_mid_burst_and_hand_over(bus: Bus, bridge_dirs: tuple[str, str]) -> None:
    bus.start("broker")
    first, second = bus.start("bridge", bridge_dirs[0]), bus.start("bridge", bridge_dirs[1])
    active, standby = active_and_standby(first, second)
    watch = bus.watcher()
    tablet_token = None
    try:
        rids, items = bus.seed()
        tablet_token = bus.add_device(rids[0], "kds-1", "tablet")
        tablet = Subscriber(bus.mqtt_port, "kds-1", tablet_token)
        assert tablet.connect() == 0
        bumped = bus.place(rids[0], items[rids[0]])
        wait_for(lambda: watch.complete(bus.event_seqs()), timeout=20)
        assert_standby_holds_no_connection(bus, standby)

        handover: dict[str, float] = {}

        def kill_and_bump() -> None:
            killed = time.monotonic()
            active.stop(signal.SIGKILL)
            at_kill = bus.event_seqs()
            # while nobody holds the lease: the message waits in the ingest's persistent session
            bump(tablet, rids[0], bumped, "during-handover")
            wait_for(lambda: "bridge active" in standby.output(), timeout=15, interval=0.01)
            handover["active"] = time.monotonic() - killed
            # an event committed after the kill reaches the subscriber: the new holder publishes
            wait_for(lambda: any(watch.past(rid, at_kill[rid]) for rid in rids), timeout=15, interval=0.01)
            handover["publishing"] = time.monotonic() - killed

        burst(bus, rids, items, BURST // 3, kill_and_bump)
        assert "active" in handover, "the standby did not take over"
        assert standby.output().count("bridge active") == 1
        expected = bus.event_seqs()
        started = time.monotonic()
        wait_for(lambda: watch.complete(expected) and status_changes(bus, bumped) == ["preparing"], timeout=30)
        caught_up = time.monotonic() - started
        duplicates = watch.check(expected, handovers=1)
        assert duplicates <= 200  # at most the dead relay's last batch (Relay batch_size) came again
        wait_for(lambda: bus.unpublished() == 0, timeout=15)
        where = "PostgreSQL" if bus.database_url else "SQLite"
        print(
            f"\n{where}: kill -9 of the active bridge → standby active in {handover['active']:.2f} s, "
            f"first new event delivered in {handover['publishing']:.2f} s; every event of "
            f"{sum(expected.values())} out {caught_up:.2f} s after the burst; {duplicates} duplicates"
        )

        # the new holder's relay is woken by each commit (NOTIFY, or the socket on SQLite), not its poll
        for _ in range(3):
            time.sleep(0.3)  # the relay has gone back to waiting
            before = bus.event_seqs()[rids[1]]
            bus.place(rids[1], items[rids[1]])
            placed = time.monotonic()
            wait_for(partial(watch.past, rids[1], before), timeout=15)
            assert time.monotonic() - placed < WAKE_BOUND_SECONDS
        time.sleep(1)
        assert status_changes(bus, bumped) == ["preparing"]  # applied once, whatever was redelivered
        tablet.close()
    finally:
        watch.close()


def test_postgres_kill_9_of_the_active_bridge_mid_burst_hands_over_in_order_with_nothing_missing(pg_bus: Bus):
    kill_mid_burst_and_hand_over(pg_bus, ("data-a", "data-b"))  # apart: only the advisory lock is shared


def test_sqlite_two_bridges_on_one_data_directory_hand_over_on_kill_9(sqlite_bus: Bus):
    kill_mid_burst_and_hand_over(sqlite_bus, ("data", "data"))


def lease_backend(bus: Bus) -> int:
    assert bus.database_url is not None
    import psycopg

    from bridge.lease import KEY

    url = bus.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s",
            ((KEY >> 32) & 0xFFFFFFFF, KEY & 0xFFFFFFFF),
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate(bus: Bus, pid: int) -> None:
    import psycopg

    url = bus.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_terminated_lease_connection_makes_the_holder_stand_down_and_one_bridge_carries_on(pg_bus: Bus):
    bus = pg_bus
    bus.start("broker")
    ports = {"data-a": free_port(), "data-b": free_port()}
    first, second = (bus.start("bridge", d, ORDERBUS_METRICS_PORT=str(port)) for d, port in ports.items())
    active, _standby = active_and_standby(first, second)
    watch = bus.watcher()
    try:
        rids, items = bus.seed()
        wait_for(lambda: watch.complete(bus.event_seqs()), timeout=20)

        def cut() -> None:
            terminate(bus, lease_backend(bus))

        burst(bus, rids, items, BURST // 2, cut)
        wait_for(lambda: "the lease was lost" in active.output(), timeout=15)
        expected = bus.event_seqs()
        wait_for(lambda: watch.complete(expected), timeout=30)
        # two turns in all, whichever bridge took the lease again; never both at once (the order holds)
        assert first.output().count("bridge active") + second.output().count("bridge active") == 2
        watch.check(expected, handovers=1)
        wait_for(lambda: bus.service_connections()[0] == 2, timeout=15)
        figures = [bridge_metrics(port) for port in ports.values()]
        assert sum(f["orderbus_bridge_active"] for f in figures) == 1
        assert sum(f["orderbus_bridge_lease_acquired_total"] for f in figures) == 2
        assert sum(f["orderbus_bridge_lease_lost_total"] for f in figures) == 1
        assert "Traceback" not in first.output() + second.output()
    finally:
        watch.close()


def bridge_metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("orderbus_bridge_")
    }


def test_a_batch_published_but_not_stamped_by_a_killed_relay_goes_out_once_more_and_only_it(pg_bus: Bus):
    """At least once, made to happen: the relay's stamping UPDATE is held up by a table lock (SELECT
    still works), so the active bridge publishes its batch, gets every PUBACK, and is killed before
    it can stamp. The next holder publishes exactly that batch again, then what came after, in order."""
    bus = pg_bus
    bus.start("broker")
    watch = bus.watcher()
    try:
        rids, items = bus.seed()  # no bridge yet: the events wait in the outbox
        for n in range(12):
            bus.place(rids[n % len(rids)], items[rids[n % len(rids)]])
        batch = bus.event_seqs()
        url = bus.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        import psycopg

        with psycopg.connect(url) as blocker:
            blocker.execute("LOCK TABLE outbox_event IN EXCLUSIVE MODE")  # reads pass, the stamp waits
            first = bus.start("bridge", "data-a")
            wait_for(lambda: watch.complete(batch), timeout=20)  # published, every PUBACK in
            assert bus.unpublished() == sum(batch.values())  # and none stamped
            first.stop(signal.SIGKILL)
            blocker.rollback()
        second = bus.start("bridge", "data-b")
        wait_for(lambda: "bridge active" in second.output(), timeout=15)
        for n in range(6):
            bus.place(rids[n % len(rids)], items[rids[n % len(rids)]])
        expected = bus.event_seqs()
        wait_for(lambda: watch.complete(expected) and bus.unpublished() == 0, timeout=30)
        assert watch.check(expected, handovers=1) == sum(batch.values())  # the batch again, nothing else twice
        for rid in rids:
            seqs = watch.seqs(rid)
            assert seqs == [*range(1, batch[rid] + 1), *range(1, expected[rid] + 1)], (rid, seqs)
    finally:
        watch.close()


def test_a_bridge_started_beside_orderbus_up_stands_by_and_takes_over_when_up_stops(tmp_path: Path):
    """`orderbus up` holds the lease too: a bridge beside it neither fights it nor publishes."""
    stack = Stack(tmp_path / "data").start()
    connects = REGISTRY.get_sample_value
    bridge = Proc(
        "bridge",
        ["bridge", "--data-dir", str(stack.settings.data_dir), "--mqtt-port", str(stack.settings.mqtt_port)],
        {},
        tmp_path / "bridge.log",
    )
    stopped = False
    try:
        assert stack.runtime.relay is not None
        service = {"role": "service", "listener": "tcp"}
        wait_for(lambda: (connects("orderbus_broker_connects_total", service) or 0) >= 2, timeout=15)
        before = connects("orderbus_broker_connects_total", service)
        bridge.start()
        wait_for(lambda: "bridge standby: another holds the lease" in bridge.output(), timeout=15)
        time.sleep(3)
        assert connects("orderbus_broker_connects_total", service) == before  # no fight, no connection
        assert "bridge active" not in bridge.output()
        stack.call(stack.runtime.stop())  # releases the lease (its broker goes too: the bridge then waits for one)
        stopped = True
        wait_for(lambda: "bridge active" in bridge.output(), timeout=15)
    finally:
        bridge.stop()
        if not stopped:
            stack.call(stack.runtime.stop())
        stack.loop.call_soon_threadsafe(stack.loop.stop)
