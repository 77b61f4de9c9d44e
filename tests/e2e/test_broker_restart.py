"""`orderbus broker` as a real process, stopped by kill -9 (or SIGTERM) and started again on the same
ports and data directory: what it owed its persistent sessions, and its retained messages, are still
there (`<data_dir>/broker.sqlite3`), within the bounds of docs/security.md, and a store it cannot
read costs the old sessions but not the broker.

Clients are raw sockets, so a test sees Session Present, DUP, RETAIN and every packet id as sent.

The broker's store is write-behind with group commit: the PUBACK of a QoS 1 PUBLISH that was queued
for a persistent session is sent only once everything recorded before it is durable. A test that
kills the broker right after something it cannot see acknowledged (a retained message, a delivery
to a subscriber) first publishes one more message to an offline persistent session and waits for
its PUBACK (`Bus.settle`): the same proof a client has that the broker wrote what came before.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from core import topics
from core.domain import DEFAULT_STATION
from scripts import raw_mqtt as raw
from tests.e2e.test_split import Seeded, Split
from tests.support import Proc, wait_for

pytestmark = pytest.mark.e2e

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
STORE = "broker.sqlite3"
READ_SECONDS = 10.0  # how long a client waits for a packet the broker owes it
QUIET_SECONDS = 1.0  # nothing more within this after what was owed: nothing was sent twice


@dataclass
class RawClient:
    """One MQTT 3.1.1 client over a plain socket that acknowledges nothing unless told to."""

    port: int
    client_id: str
    token: str = field(repr=False)
    sock: socket.socket | None = field(default=None, repr=False)
    received: deque[raw.Publish] = field(default_factory=deque)  # PUBLISHes read while waiting for another packet
    _ids: Iterator[int] = field(default_factory=lambda: count(1), repr=False)

    def connect(self, *, clean: bool) -> bool:
        """CONNECT (accepted, or the test fails); returns Session Present."""
        self.close()
        self.received.clear()
        self.sock = raw.open_socket(self.port, timeout=READ_SECONDS)
        self.sock.sendall(raw.connect(self.client_id, self.token, clean=clean, keepalive=60))
        body = self._until(CONNACK)
        assert body[1] == 0, f"{self.client_id}: CONNACK {body[1]}"
        assert body[0] in (0, 1), f"reserved CONNACK flags {body[0]:#x}"
        return body[0] == 1

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        packet_id = next(self._ids)
        self._socket().sendall(raw.subscribe(topic_filter, packet_id=packet_id, qos=qos))
        body = self._until(SUBACK)
        assert struct.unpack("!H", body[:2])[0] == packet_id
        return body[2]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1; returns once the broker has acknowledged it."""
        packet_id = next(self._ids)
        self._socket().sendall(raw.publish(topic, payload, qos=1, retain=retain, packet_id=packet_id))
        while struct.unpack("!H", self._until(PUBACK))[0] != packet_id:
            pass

    def next_publish(self, timeout: float = READ_SECONDS) -> raw.Publish:
        deadline = time.monotonic() + timeout
        while not self.received:
            answer = self._read(deadline)
            if answer is None:
                raise AssertionError(f"{self.client_id}: no PUBLISH within {timeout}s")
        return self.received.popleft()

    def publishes(self, n: int, timeout: float = READ_SECONDS) -> list[raw.Publish]:
        got: list[raw.Publish] = []
        deadline = time.monotonic() + timeout
        try:
            while len(got) < n:
                got.append(self.next_publish(max(0.0, deadline - time.monotonic())))
        except AssertionError:
            raise AssertionError(f"{self.client_id}: expected {n} PUBLISH within {timeout}s, got {got}") from None
        return got

    def quiet(self, seconds: float = QUIET_SECONDS) -> list[raw.Publish]:
        """Every PUBLISH that arrives until `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while self._read(deadline) is not None:
            pass
        got = list(self.received)
        self.received.clear()
        return got

    def puback(self, packet_id: int | None) -> None:
        assert packet_id is not None
        self._socket().sendall(bytes([PUBACK << 4, 2]) + struct.pack("!H", packet_id))

    def disconnect(self) -> None:
        """A clean DISCONNECT: no Will, and the broker knows the client left."""
        if self.sock is not None:
            self.sock.sendall(raw.DISCONNECT)
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _socket(self) -> socket.socket:
        assert self.sock is not None, f"{self.client_id} is not connected"
        return self.sock

    def _read(self, deadline: float) -> tuple[int, bytes] | None:
        """The next packet before `deadline` (a PUBLISH goes to `received`); None when time is up."""
        sock = self._socket()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return None
        if not first:
            raise AssertionError(f"{self.client_id}: the broker closed the connection")
        sock.settimeout(READ_SECONDS)  # the rest of a packet that has begun comes at once
        answer = raw.read_packet(sock)
        assert answer is not None, f"{self.client_id}: the broker closed the connection mid-packet"
        if answer[0] == PUBLISH:
            self.received.append(raw.parse_publish(first[0], answer[1]))
        return answer

    def _until(self, kind: int) -> bytes:
        deadline = time.monotonic() + READ_SECONDS
        while True:
            answer = self._read(deadline)
            if answer is None:
                raise AssertionError(f"{self.client_id}: no packet of type {kind} within {READ_SECONDS}s")
            if answer[0] == kind:
                return answer[1]


@dataclass
class Bus(Split):
    """The parts apart (`test_split.Split`) with a broker that a test kills and starts again."""

    broker_env: dict[str, str] = field(default_factory=dict)
    broker: Proc | None = None
    clients: list[RawClient] = field(default_factory=list)

    def start_broker(self, **env: str) -> Proc:
        """The first start fixes the environment (bounds) every restart gets too."""
        self.broker_env = self.broker_env or env
        self.broker = self.start("broker", metrics_port=None, **self.broker_env)
        return self.broker

    def stop_broker(self, sig: int) -> None:
        assert self.broker is not None
        self.broker.stop(sig)
        assert self.broker.process.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 0), self.broker.output()

    def restart_broker(self, sig: int = signal.SIGKILL) -> Proc:
        """Stop the broker with `sig` and start it again on the same ports and data directory."""
        self.stop_broker(sig)
        return self.start_broker()

    @property
    def rid(self) -> int:
        return self.site.rid

    def client(self, client_id: str, role: str, **claims: Any) -> RawClient:
        rid = None if role == topics.SERVICE else self.rid
        made = RawClient(self.mqtt_port, client_id, self.site.mqtt_token(client_id, role, rid, **claims))
        self.clients.append(made)
        return made

    def printer(self, device_id: str, station: str) -> RawClient:
        """A registered printer with the token the API hands out for it (the broker checks its jti)."""
        token = self.site.add_device(self.rid, device_id, "printer", station=station)
        made = RawClient(self.mqtt_port, device_id, token)
        self.clients.append(made)
        return made

    def service(self) -> RawClient:
        """The bus's side: publishes what the relay would, QoS 1 (a PUBACK means the broker took it)."""
        bus = self.client(f"bus-test-{time.monotonic_ns()}", topics.SERVICE)
        assert bus.connect(clean=True) is False
        return bus

    def offline_session(self, client: RawClient, topic_filter: str) -> None:
        """`client` has a persistent session subscribed to `topic_filter` and has left it (clean DISCONNECT)."""
        client.connect(clean=False)
        assert client.subscribe(topic_filter, qos=1) == 1
        client.disconnect()

    def settle(self, publisher: RawClient) -> None:
        """Everything the broker recorded so far is durable: a message queued for an offline persistent
        session is acknowledged only then (group commit), so its PUBACK is the proof."""
        topic = topics.device(self.rid, "settle", "events")
        if not any(c.client_id == "settle" for c in self.clients):
            self.offline_session(self.client("settle", topics.SERVICE), topic)
        publisher.publish(topic, b"settle")


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    data_dir = tmp_path / "data"
    running = Bus(Seeded(data_dir), data_dir)
    yield running
    for client in running.clients:
        client.close()
    for part in reversed(running.parts):
        part.stop()
    running.site.engine.dispose()


def unpublished(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "orderbus.db") as db:
        return db.execute("select count(*) from outbox_event where published_at is null").fetchone()[0]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_printer_away_during_a_broker_restart_gets_each_queued_ticket_once_in_order(bus: Bus, stop: int):
    """Tickets queued for an offline printer (persistent session, QoS 1) while the broker is killed
    and restarted reach it when it returns: Session Present 1 [MQTT-3.2.2-2], each ticket once, in
    ticket order, RETAIN 0 [MQTT-3.3.1-9], not the bus's resend (the printer never said `online`).
    Once acknowledged they are gone for good: another restart brings none of them again."""
    bus.start_broker()
    bus.start("bridge")
    bus.start("api")
    printer = bus.printer("printer-kitchen", DEFAULT_STATION)
    tickets_topic = topics.tickets(bus.rid, DEFAULT_STATION)
    assert printer.connect(clean=False) is False
    assert printer.subscribe(tickets_topic, qos=1) == 1
    printer.disconnect()

    with bus.admin() as admin:
        placed = [bus.order(admin) for _ in range(3)]
    wait_for(lambda: unpublished(bus.data_dir) == 0, timeout=15, interval=0.05)  # PUBACKed: queued for it

    bus.restart_broker(stop)
    assert printer.connect(clean=False) is True, "the printer's session did not survive the restart"
    got = printer.publishes(len(placed))
    for message in got:
        printer.puback(message.packet_id)
    got += printer.quiet()

    envelopes = [json.loads(message.payload) for message in got]
    tickets = [envelope["data"]["ticket"] for envelope in envelopes]
    assert [t["order_id"] for t in tickets] == placed, "each ticket once, in order"
    assert [t["id"] for t in tickets] == sorted({t["id"] for t in tickets})
    assert [e["seq"] for e in envelopes] == sorted({e["seq"] for e in envelopes})
    assert {(m.topic, m.qos, m.retain) for m in got} == {(tickets_topic, 1, False)}
    assert not any(e["data"].get("resent") for e in envelopes), "the bus's resend, not the broker's queue"

    bus.settle(bus.service())  # the PUBACKs are recorded
    bus.restart_broker(stop)
    assert printer.connect(clean=False) is True
    assert printer.quiet() == [], "a ticket acknowledged before the restart came again"


def test_a_delivery_in_flight_at_a_kill_9_comes_again_with_dup_and_its_packet_id(bus: Bus):
    """Sent and not acknowledged when the broker was killed: after the restart, the reconnecting
    persistent session gets each such PUBLISH again, DUP 1, the original packet id, in the
    original order [MQTT-4.4.0-1, MQTT-3.3.1-1], and then nothing more."""
    bus.start_broker()
    topic = topics.tickets(bus.rid, "grill")
    printer = bus.printer("printer-grill", "grill")
    assert printer.connect(clean=False) is False
    assert printer.subscribe(topic, qos=1) == 1
    publisher = bus.service()
    for payload in (b"in flight 1", b"in flight 2"):
        publisher.publish(topic, payload)
    first = printer.publishes(2)  # and no PUBACK
    assert [(m.payload, m.qos, m.dup) for m in first] == [(b"in flight 1", 1, False), (b"in flight 2", 1, False)]
    assert first[0].packet_id != first[1].packet_id
    bus.settle(publisher)  # the two deliveries' packet ids are recorded

    bus.restart_broker(signal.SIGKILL)
    assert printer.connect(clean=False) is True
    again = printer.publishes(2)
    for message in again:
        printer.puback(message.packet_id)
    expected = [(m.topic, m.payload, 1, True, False, m.packet_id) for m in first]
    assert [(m.topic, m.payload, m.qos, m.dup, m.retain, m.packet_id) for m in again] == expected
    assert printer.quiet() == []


def retained_state(bus: Bus, client_id: str, filters: list[str], expected: int) -> dict[str, raw.Publish]:
    """What a new clean-session subscriber to `filters` is sent, by topic: `expected` messages, then nothing."""
    reader = bus.client(client_id, topics.ADMIN)
    assert reader.connect(clean=True) is False
    for topic_filter in filters:
        assert reader.subscribe(topic_filter, qos=1) == 1
    got = reader.publishes(expected)
    for message in got:
        reader.puback(message.packet_id)
    got += reader.quiet()
    reader.disconnect()
    return {m.topic: m for m in got}


def test_retained_messages_survive_a_kill_9_and_a_cleared_one_stays_cleared(bus: Bus):
    """A retained message is sent to a new subscription after the restart with RETAIN 1 [MQTT-3.3.1-6],
    the latest one of its topic [MQTT-3.3.1-5]; a topic cleared by an empty retained payload before
    the kill has none [MQTT-3.3.1-10]."""
    bus.start_broker()
    kept, cleared, replaced = (
        topics.open_order(bus.rid, 1),
        topics.open_order(bus.rid, 2),
        topics.inventory_item(bus.rid, 3),
    )
    publisher = bus.service()
    publisher.publish(kept, b'{"order": 1}', retain=True)
    publisher.publish(cleared, b'{"order": 2}', retain=True)
    publisher.publish(replaced, b'{"stock": 9}', retain=True)
    publisher.publish(replaced, b'{"stock": 8}', retain=True)
    publisher.publish(cleared, b"", retain=True)
    filters = [topics.open_orders(bus.rid), replaced]
    expected = {kept: b'{"order": 1}', replaced: b'{"stock": 8}'}
    before = retained_state(bus, "dash-before", filters, len(expected))
    assert {topic: m.payload for topic, m in before.items()} == expected  # the test's own premise
    bus.settle(publisher)

    bus.restart_broker(signal.SIGKILL)
    after = retained_state(bus, "dash-after", filters, len(expected))
    assert {topic: m.payload for topic, m in after.items()} == expected
    assert all(m.retain for m in after.values())


def test_a_session_past_its_expiry_is_gone_after_a_restart_and_a_younger_one_is_kept(bus: Bus):
    """Expiry (`mqtt_session_expiry_seconds`, shrunk here) counts from the disconnect and holds across a
    restart: a session that expired while the broker was down is not restored (Session Present 0,
    its queue gone); one disconnected later, still within its expiry, is (Session Present 1)."""
    expiry = 10.0
    bus.start_broker(ORDERBUS_MQTT_SESSION_EXPIRY_SECONDS=str(int(expiry)))
    topic = topics.tickets(bus.rid, "grill")
    old, young = bus.printer("printer-old", "grill"), bus.printer("printer-young", "grill")
    bus.offline_session(old, topic)
    old_left = time.time()
    wait_until(old_left + 6.0)  # the younger one leaves 6 s later: its age at its return is 5 s + the restart
    bus.offline_session(young, topic)
    publisher = bus.service()
    publisher.publish(topic, b"queued for both")  # acknowledged once durable

    bus.stop_broker(signal.SIGKILL)
    wait_until(old_left + expiry + 1.0)  # the old session expired while no broker ran
    bus.start_broker()
    assert young.connect(clean=False) is True, "a session within its expiry was lost"
    assert [m.payload for m in young.publishes(1)] == [b"queued for both"]
    assert old.connect(clean=False) is False, "a session past its expiry was restored"
    assert old.quiet() == []


def test_a_full_offline_queue_stays_bounded_across_a_kill_9(bus: Bus):
    """At most `mqtt_max_offline_queue` (shrunk to 5 here) messages wait for an offline persistent
    session, the first ones (later ones are dropped, docs/security.md); after a kill -9 the queue
    restored is still full, so what is published then is dropped too."""
    bound = 5
    bus.start_broker(ORDERBUS_MQTT_MAX_OFFLINE_QUEUE=str(bound))
    topic = topics.tickets(bus.rid, "grill")
    printer = bus.printer("printer-grill", "grill")
    bus.offline_session(printer, topic)
    publisher = bus.service()
    for n in range(bound + 3):
        publisher.publish(topic, f"before {n}".encode())

    bus.restart_broker(signal.SIGKILL)
    publisher = bus.service()
    for n in range(3):
        publisher.publish(topic, f"after {n}".encode())
    assert printer.connect(clean=False) is True
    got = printer.publishes(bound)
    for message in got:
        printer.puback(message.packet_id)
    got += printer.quiet()
    assert [m.payload for m in got] == [f"before {n}".encode() for n in range(bound)]


_STORE_PROBLEM = re.compile(rf"\b(WARNING|ERROR|CRITICAL)\b.*{re.escape(STORE)}")


def test_a_corrupt_store_is_reported_in_one_line_and_the_broker_serves_new_sessions(bus: Bus):
    """Garbage where broker.sqlite3 should be: the broker starts anyway (what it owed is lost, and
    it says so once, naming the file), and a new persistent session connects, subscribes and receives."""
    (bus.data_dir / STORE).write_bytes(b"this is not a database\x00\xff" * 512)
    broker = bus.start_broker()
    topic = topics.tickets(bus.rid, "grill")
    printer = bus.printer("printer-grill", "grill")
    assert printer.connect(clean=False) is False
    assert printer.subscribe(topic, qos=1) == 1
    bus.service().publish(topic, b"served")
    assert [m.payload for m in printer.publishes(1)] == [b"served"]

    lines = [line for line in broker.output().splitlines() if _STORE_PROBLEM.search(line)]
    assert len(lines) == 1, f"one line about {STORE}, got: {lines}\n{broker.output()[-3000:]}"
    assert "Traceback" not in broker.output()


def wait_until(moment: float) -> None:
    """Wall-clock time passes (session expiry is measured in it): nothing to poll for."""
    time.sleep(max(0.0, moment - time.time()))
