"""The journal hooks a durable store hangs on (`broker.delivery.Journal`), and a broker restored from
what a journal kept: called for persistent sessions only, with the PUBACK of a journaled QoS 1
PUBLISH held until the journal says it is durable."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from broker.delivery import Pending, SessionSnapshot, Snapshot
from core import topics
from scripts import raw_mqtt as raw
from tests.protocol.client import RID, Bus, RawClient, offline
from tests.support import wait_for

TICKETS = topics.tickets(RID, "grill")
PRINTER = {"role": "printer", "station": "grill"}


class Recorder:
    """A journal that records every call; `after_commit` callbacks wait until `commit()`."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.waiting: list[Callable[[], None]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            with self.lock:
                self.calls.append((name, *args))

        return record

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.waiting.append(callback)

    def commit(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()

    def of(self, client_id: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [call[:1] + call[2:] for call in self.calls if call[1:2] == (client_id,)]


def test_a_persistent_session_is_journaled_and_a_clean_one_is_not(make_broker):
    journal = Recorder()
    broker = make_broker(journal=journal)
    printer = RawClient(broker, "printer-1", **PRINTER)
    assert printer.connect(clean=False) is False
    assert printer.subscribe(TICKETS, qos=1) == 1
    printer.disconnect()
    offline(broker, "printer-1")
    dash = RawClient(broker, "dash")
    dash.connect()
    assert dash.subscribe(topics.everything(RID), qos=1) == 1

    bus = RawClient(broker, "bus-1", "service", rid=None)
    bus.connect()
    bus.send(raw.publish(TICKETS, b"ticket-1", qos=1, packet_id=5))
    assert bus.try_frame(0.5) is None  # queued for the printer: no PUBACK before the journal has it
    assert dash.publish().payload == b"ticket-1"  # routed meanwhile
    broker.loop.call_soon_threadsafe(journal.commit)
    first, body = bus.frame()
    assert (first, body) == (0x40, b"\x00\x05")

    assert printer.connect(clean=False) is True
    [ticket] = printer.publishes(1)
    printer.puback(ticket)
    wait_for(lambda: ("removed", 1) in journal.of("printer-1"))
    calls = journal.of("printer-1")
    assert [call if call[0] != "session_saved" else (call[0], call[1]["sub"], call[2]) for call in calls] == [
        ("session_saved", "printer-1", 7 * 24 * 3600),  # the token's claims, and how long it may stay away
        ("subscribed", TICKETS, 1),
        ("disconnected",),  # its expiry counts from here, across a restart too
        ("added", 1, TICKETS, b"ticket-1", 1),
        ("session_saved", "printer-1", 7 * 24 * 3600),
        ("sent", 1, ticket.packet_id),
        ("removed", 1),
    ]
    assert journal.of("dash") == []  # a clean session costs the journal nothing


def test_a_restored_broker_resends_in_flight_then_queued_and_keeps_retained(make_broker):
    claims = {"sub": "printer-1", "role": "printer", "rid": RID, "station": "grill", "exp": 4_000_000_000}
    saved = SessionSnapshot(
        "printer-1",
        claims,
        subscriptions=[(TICKETS, 1)],
        pending=[Pending(3, TICKETS, b"was in flight", 1, packet_id=7), Pending(4, TICKETS, b"was queued", 1)],
    )
    state = topics.open_order(RID, 1)
    broker = make_broker(snapshot=Snapshot([saved], [(state, b"open", 1)]))
    printer = RawClient(broker, "printer-1", **PRINTER)
    assert printer.connect(clean=False) is True  # the session was kept [MQTT-3.2.2-2]
    got = printer.publishes(2)
    assert [(m.payload, m.dup, m.packet_id) for m in got] == [(b"was in flight", True, 7), (b"was queued", False, 8)]
    Bus(broker).send_publish(TICKETS, b"new")
    assert printer.publish().payload == b"new"  # its restored subscription
    screen = RawClient(broker, "screen-1")
    screen.connect()
    assert screen.subscribe(topics.open_orders(RID), qos=1) == 1
    retained = screen.publish()
    assert (retained.payload, retained.retain) == (b"open", True)
