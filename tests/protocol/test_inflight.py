"""Issue 12, item 1: QoS 1 messages in flight survive a reconnect [MQTT-4.4.0-1].

"When a Client reconnects with CleanSession set to 0, both the Client and Server MUST re-send any
unacknowledged PUBLISH Packets (where QoS > 0) ... using their original Packet Identifiers", with
DUP=1 [MQTT-3.3.1-1], and before new messages (the order of §4.6). A client that leaves without
PUBACKing is the printer whose Wi-Fi dropped mid-ticket: it is owed that ticket."""

from __future__ import annotations

import struct

import pytest

from core import topics
from scripts import raw_mqtt as raw
from tests.protocol.client import PUBLISH, PUBREL, RID, Bus, RawClient, offline

ORDERS = topics.channel(RID, topics.ORDERS)


def _two_in_flight(broker, client_id: str) -> tuple[RawClient, Bus, list[raw.Publish]]:
    """A persistent session subscribed at QoS 1 that received two PUBLISHes and PUBACKed neither."""
    kds = RawClient(broker, client_id)
    assert kds.connect(clean=False) is False, "a new persistent session has no stored state [MQTT-3.2.2-3]"
    assert kds.subscribe(ORDERS, qos=1) == 1
    bus = Bus(broker)
    bus.send_publish(ORDERS, b"first")
    bus.send_publish(ORDERS, b"second")
    sent = kds.publishes(2)
    assert [(m.payload, m.qos, m.dup) for m in sent] == [(b"first", 1, False), (b"second", 1, False)]
    assert sent[0].packet_id != sent[1].packet_id
    return kds, bus, sent


def _leave(kds: RawClient, how: str) -> None:
    if how == "disconnect":
        kds.disconnect()
    else:
        kds.drop()  # the TCP connection ends, no DISCONNECT: the broker learns it from EOF


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_mqtt_4_4_0_1_unacknowledged_publishes_are_resent_with_dup_and_original_ids_before_new_ones(broker, how):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-3.2.2-2]: both in-flight PUBLISHes come again, DUP=1, the
    same packet ids, in order, before a message published after the reconnect."""
    kds, bus, sent = _two_in_flight(broker, f"kds-{how}")
    _leave(kds, how)

    assert kds.connect(clean=False) is True, "the persistent session is stored: Session Present 1 [MQTT-3.2.2-2]"
    bus.send_publish(ORDERS, b"third")
    got = kds.publishes(3)
    assert [(m.payload, m.packet_id, m.dup, m.qos) for m in got[:2]] == [
        (b"first", sent[0].packet_id, True, 1),
        (b"second", sent[1].packet_id, True, 1),
    ], "in-flight PUBLISHes are resent first, DUP=1, with their original packet ids [MQTT-4.4.0-1]"
    assert (got[2].payload, got[2].dup, got[2].qos) == (b"third", False, 1)
    assert got[2].packet_id not in (sent[0].packet_id, sent[1].packet_id), "a packet id still in use was reused"

    kds.puback(*got)
    assert kds.quiet() == []
    kds.disconnect()
    assert kds.connect(clean=False) is True
    assert kds.quiet() == [], "PUBACKed messages are not owed any more"


def test_mqtt_4_4_0_1_a_publish_acknowledged_before_leaving_is_not_resent(broker):
    """[MQTT-4.4.0-1]: only the unacknowledged PUBLISH is resent; the PUBACKed one is done with."""
    kds, _bus, (first, second) = _two_in_flight(broker, "kds-1")
    kds.puback(first)
    kds.disconnect()  # after the PUBACK on the same connection: the broker reads them in order

    assert kds.connect(clean=False) is True
    again = kds.publish()
    assert (again.payload, again.packet_id, again.dup) == (b"second", second.packet_id, True)
    kds.puback(again)
    assert kds.quiet() == [], "the PUBACKed message came again"


def test_mqtt_4_4_0_1_in_flight_and_queued_messages_come_in_order(broker):
    """[MQTT-4.4.0-1] and §4.6 ordering: what was in flight is resent first, then what was queued while
    the client was away, in the order published."""
    kds, bus, sent = _two_in_flight(broker, "kds-1")
    kds.disconnect()
    offline(broker, "kds-1")
    bus.send_publish(ORDERS, b"while away")

    assert kds.connect(clean=False) is True
    got = kds.publishes(3)
    assert [(m.payload, m.dup) for m in got] == [(b"first", True), (b"second", True), (b"while away", False)]
    assert [m.packet_id for m in got[:2]] == [m.packet_id for m in sent]
    kds.puback(*got)
    assert kds.quiet() == []


def test_mqtt_4_4_0_1_a_takeover_resends_what_the_old_connection_left_in_flight(broker):
    """[MQTT-3.1.4-2] [MQTT-4.4.0-1]: the client comes back on a new connection while the broker still
    holds the old one (a half-open TCP connection: the printer's Wi-Fi roamed). The broker closes the
    old connection and, the session being persistent, resends its in-flight PUBLISHes with DUP=1."""
    kds, _bus, sent = _two_in_flight(broker, "kds-1")
    old = kds.sock
    assert old is not None
    kds.sock = None  # left open: the broker has not seen it end
    assert kds.connect(clean=False) is True
    assert raw.closed_by_peer(old, 5.0), "the old connection was kept [MQTT-3.1.4-2]"
    old.close()
    got = kds.publishes(2)
    assert [(m.payload, m.packet_id, m.dup) for m in got] == [(m.payload, m.packet_id, True) for m in sent]
    kds.puback(*got)
    assert kds.quiet() == []


def test_mqtt_3_1_2_6_a_clean_reconnect_drops_what_was_in_flight(broker):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-1]: in-flight PUBLISHes belong to the session; a CleanSession=1
    reconnect discards it, so nothing is resent."""
    kds, _bus, _sent = _two_in_flight(broker, "kds-1")
    kds.disconnect()
    assert kds.connect(clean=True) is False
    assert kds.quiet() == [], "a discarded session's in-flight messages were resent"


def test_mqtt_4_4_0_1_many_unacknowledged_messages_come_again_in_order(broker):
    """[MQTT-4.4.0-1] and §4.6 ordering with more messages than a broker may keep in flight: the
    client PUBACKs nothing, leaves, and comes back. Whatever the broker had sent comes first, DUP=1
    with its ids, then whatever it had held back, DUP=0: all of them, once, in the published order."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=False) is False
    assert kds.subscribe(ORDERS, qos=1) == 1
    bus = Bus(broker)
    payloads = [f"order {n}".encode() for n in range(150)]
    for payload in payloads:
        bus.send_publish(ORDERS, payload)
    sent = []
    while (frame := kds.try_frame(0.5)) is not None:  # no PUBACK: everything sent stays in flight
        sent.append(raw.parse_publish(*frame))
    assert sent, "nothing was delivered"
    assert [m.payload for m in sent] == payloads[: len(sent)]
    kds.disconnect()

    assert kds.connect(clean=False) is True
    got = kds.publishes(len(sent))
    kds.puback(*got)
    assert [(m.payload, m.packet_id, m.dup) for m in got] == [(m.payload, m.packet_id, True) for m in sent]
    rest = kds.receive(len(payloads) - len(sent))
    assert [(m.payload, m.dup) for m in rest] == [(p, False) for p in payloads[len(sent) :]]


def test_mqtt_4_4_0_1_qos2_unacknowledged_publish_and_pubrel_are_resent(broker):
    """[MQTT-4.4.0-1] in full: "re-send any unacknowledged PUBLISH Packets (where QoS > 0) and PUBREL
    Packets". A QoS 2 subscriber gets two PUBLISHes, PUBRECs the first (the broker answers PUBREL
    [MQTT-4.3.3-1]) and leaves without PUBCOMP, and without PUBREC for the second. At reconnect: the
    PUBREL again for the first, the PUBLISH with DUP=1 for the second, both with their ids; once the
    exchanges complete, nothing is owed."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=False) is False
    assert kds.subscribe(ORDERS, qos=2) == 2
    bus = Bus(broker)
    bus.send_publish(ORDERS, b"first", qos=2)
    bus.send_publish(ORDERS, b"second", qos=2)
    first, second = kds.publishes(2)
    assert [(m.payload, m.qos) for m in (first, second)] == [(b"first", 2), (b"second", 2)]
    assert first.packet_id is not None and second.packet_id is not None
    kds.send(raw.pubrec(first.packet_id))
    kds.expect(PUBREL, first.packet_id)
    kds.disconnect()

    assert kds.connect(clean=False) is True
    got = [kds.frame(), kds.frame()]
    resent = {(f >> 4, body[:2] if f >> 4 == PUBREL else raw.parse_publish(f, body).packet_id) for f, body in got}
    assert resent == {(PUBREL, struct.pack("!H", first.packet_id)), (PUBLISH, second.packet_id)}, got
    again = next(raw.parse_publish(f, body) for f, body in got if f >> 4 == PUBLISH)
    assert (again.payload, again.dup, again.qos) == (b"second", True, 2)
    kds.send(raw.pubcomp(first.packet_id))
    kds.send(raw.pubrec(second.packet_id))
    kds.expect(PUBREL, second.packet_id)
    kds.send(raw.pubcomp(second.packet_id))
    assert kds.quiet() == []
    kds.disconnect()
    assert kds.connect(clean=False) is True
    assert kds.quiet() == [], "completed QoS 2 exchanges are not owed any more"
