"""broker.delivery: what a session is owed, and the bytes it is sent (through the real `Link`)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from broker import codec
from broker.delivery import NO_JOURNAL, Message, Outbound, Pending
from broker.stats import DROPPED, Traffic
from broker.transport import Flusher, Link


class Wire:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.data = b""
        self.buffered = 0  # what the client has not taken yet

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Recorder:
    """A journal that records the calls made to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connect(loop: asyncio.AbstractEventLoop) -> tuple[Link, Wire]:
    wire = Wire()
    return Link(wire, Flusher(loop), Traffic()), wire


def outbound(persistent: bool = True, window: int = 100, max_queue: int = 10, journal: Any = NO_JOURNAL) -> Outbound:
    return Outbound("c", persistent, window=window, max_queue=max_queue, max_backlog=1000, journal=journal)


def sent(link: Link, wire: Wire) -> list[tuple[int, int | None, bytes]]:
    """(first byte, packet id or None, payload) of every packet written since the last call."""
    link.flush()
    data, wire.data, out = wire.data, b"", []
    while data:
        length, start = codec.read_remaining_length(data, 1) or (0, 0)
        first, body, data = data[0], data[start : start + length], data[start + length :]
        if first >> 4 == codec.PUBLISH:
            topic_end = 2 + struct.unpack("!H", body[:2])[0]
            pid = struct.unpack("!H", body[topic_end : topic_end + 2])[0] if first & 0x06 else None
            out.append((first, pid, body[topic_end + (2 if pid else 0) :]))
        else:
            out.append((first, struct.unpack("!H", body[:2])[0], b""))
    return out


def test_the_delivered_qos_is_the_lower_of_message_and_subscription(loop):
    """[MQTT-3.8.4-6]: a QoS 0 publish reaches a QoS 1 subscriber at QoS 0, a QoS 2 one a QoS 1 subscriber at 1."""
    link, wire = connect(loop)
    session = outbound()
    session.resume(link)
    session.deliver(Message("t", b"zero", 0), 1)
    session.deliver(Message("t", b"two", 2), 1)
    session.deliver(Message("t", b"one", 1), 2)
    assert sent(link, wire) == [(0x30, None, b"zero"), (0x32, 1, b"two"), (0x32, 2, b"one")]


def test_retain_is_set_only_for_a_retained_message_sent_for_a_new_subscription(loop):
    """[MQTT-3.3.1-9]: live and queued deliveries carry RETAIN=0."""
    link, wire = connect(loop)
    session = outbound()
    session.deliver(Message("t", b"queued", 1), 1)  # while away
    session.resume(link)
    session.deliver(Message("t", b"live", 0), 0)
    session.deliver(Message("t", b"state", 0), 2, retain=True)
    session.deliver(Message("t", b"state1", 1), 2, retain=True)
    assert sent(link, wire) == [
        (0x32, 1, b"queued"),
        (0x30, None, b"live"),
        (0x31, None, b"state"),
        (0x33, 2, b"state1"),
    ]


def test_packet_ids_are_never_0_and_skip_those_in_flight(loop):
    """[MQTT-2.3.1-1]: after 65535 the ids wrap to 1, past any still unacknowledged."""
    link, _wire = connect(loop)
    session = outbound(window=70_000)
    session.resume(link)
    for _ in range(65_535):
        session.deliver(Message("t", b"", 1), 1)
    assert sorted(session.inflight) == list(range(1, 65_536))
    for pid in range(1, 65_536):
        if pid not in (1, 2, 4):
            assert session.acked(pid)
    session.deliver(Message("t", b"", 1), 1)
    session.deliver(Message("t", b"", 1), 1)
    assert list(session.inflight) == [1, 2, 4, 3, 5]


def test_beyond_the_window_messages_wait_and_go_as_acknowledgements_come(loop):
    link, wire = connect(loop)
    session = outbound(window=2)
    session.resume(link)
    for n in range(4):
        session.deliver(Message("t", str(n).encode(), 1), 1)
    assert [payload for _, _, payload in sent(link, wire)] == [b"0", b"1"]
    assert session.acked(1)
    assert sent(link, wire) == [(0x32, 3, b"2")]
    assert not session.acked(1)  # twice: unknown now, the caller counts it as ignored
    assert not session.completed(2)  # a PUBCOMP for a QoS 1 delivery


def test_a_reconnect_resends_in_flight_with_dup_and_original_ids_before_the_queue(loop):
    """[MQTT-4.4.0-1]: PUBLISH again with DUP=1 and the same id, PUBREL for what was PUBREC'd, in order."""
    link, wire = connect(loop)
    session = outbound(window=3)
    session.resume(link)
    session.deliver(Message("t", b"a", 1), 1)
    session.deliver(Message("t", b"b", 2), 2)
    session.deliver(Message("t", b"c", 1), 1)
    session.deliver(Message("t", b"d", 1), 1)  # beyond the window
    assert session.received(2)
    assert sent(link, wire)[-1] == (0x62, 2, b"")  # PUBREL
    session.link = None  # the connection dropped
    session.deliver(Message("t", b"e", 0), 0)  # QoS 0 is not kept for an absent client
    again, wire2 = connect(loop)
    session.resume(again)
    assert sent(again, wire2) == [(0x3A, 1, b"a"), (0x62, 2, b""), (0x3A, 3, b"c")]
    assert session.completed(2)
    assert sent(again, wire2) == [(0x32, 4, b"d")]


def test_an_absent_persistent_session_keeps_a_bounded_queue(loop):
    session = outbound(max_queue=2)
    before = DROPPED.labels(cause="offline_queue_full")._value.get()
    for n in range(3):
        session.deliver(Message("t", str(n).encode(), 1), 1)
    assert [e.message.data for e in session.queue] == [b"0", b"1"]
    assert DROPPED.labels(cause="offline_queue_full")._value.get() == before + 1
    clean = outbound(persistent=False)
    clean.deliver(Message("t", b"x", 1), 1)
    assert not clean.queue


def test_a_stalled_client_loses_qos_0_and_queues_qos_1(loop):
    link, wire = connect(loop)
    session = outbound()
    session.resume(link)
    session.deliver(Message("t", b"first", 1), 1)
    wire.buffered = 5000  # over max_backlog: the client stopped reading
    before = DROPPED.labels(cause="queue_full")._value.get()
    session.deliver(Message("t", b"lost", 0), 0)
    session.deliver(Message("t", b"waits", 1), 1)
    assert DROPPED.labels(cause="queue_full")._value.get() == before + 1
    assert [payload for _, _, payload in sent(link, wire)] == [b"first"]
    wire.buffered = 0
    assert session.acked(1)
    assert sent(link, wire) == [(0x32, 2, b"waits")]


def test_the_journal_hears_of_every_message_of_a_persistent_session(loop):
    journal = Recorder()
    link, _wire = connect(loop)
    session = outbound(journal=journal)
    session.deliver(Message("t", b"a", 1), 1)  # queued
    session.resume(link)
    session.deliver(Message("u", b"b", 1), 1)
    assert session.acked(1)
    assert session.keep_only(lambda topic: topic != "u") == ["u"]
    assert journal.calls == [
        ("added", "c", 1, "t", b"a", 1),
        ("sent", "c", 1, 1),
        ("added", "c", 2, "u", b"b", 1),
        ("sent", "c", 2, 2),
        ("removed", "c", 1),
        ("removed", "c", 2),
    ]
    clean_journal = Recorder()
    clean = Outbound("d", False, window=5, max_queue=5, max_backlog=1000, journal=clean_journal)
    clean.resume(link)
    clean.deliver(Message("t", b"a", 1), 1)
    assert clean_journal.calls == []  # clean sessions cost nothing


def test_pending_messages_from_a_journal_are_resent_or_sent(loop):
    session = outbound()
    session.load([Pending(4, "t", b"was in flight", 1, packet_id=9), Pending(5, "t", b"queued", 1)])
    link, wire = connect(loop)
    session.resume(link)
    assert sent(link, wire) == [(0x3A, 9, b"was in flight"), (0x32, 10, b"queued")]
    session.deliver(Message("t", b"new", 1), 1)
    assert not session.queue and list(session.inflight) == [9, 10, 11]
