"""Issue 12, item 5: what the broker already does right, pinned so the rewrite keeps it: overlapping
subscriptions, keepalive, the Last Will, clearing a retained message, UNSUBSCRIBE, a second CONNECT,
a foreign protocol name, and the packet ids of SUBACK, PUBACK and UNSUBACK; PINGRESP."""

from __future__ import annotations

import struct

import pytest

from core import topics
from scripts import raw_mqtt as raw
from tests.protocol.client import PINGRESP, PUBACK, PUBCOMP, PUBREC, PUBREL, RID, Bus, Closed, RawClient
from tests.support import Subscriber

ORDERS = topics.channel(RID, topics.ORDERS)
PRINTER_ID = "printer-1"
STATUS = topics.device(RID, PRINTER_ID, "status")


def _printer(broker) -> RawClient:
    return RawClient(broker, PRINTER_ID, "printer", station="grill")


def _status_watch(broker) -> RawClient:
    watch = RawClient(broker, "dash-1")
    watch.connect()
    assert watch.subscribe(STATUS, qos=1) == 1
    return watch


# --- overlapping subscriptions ---------------------------------------------------------------


def test_mqtt_3_3_5_1_overlapping_subscriptions_get_a_copy_each_one_at_the_highest_qos(broker):
    """[MQTT-3.3.5-1]: a message matching two of a client's filters (QoS 0 and QoS 1) is delivered
    respecting the maximum QoS of the matches. What this broker does, and keeps doing: one copy per
    matching subscription (the standard allows it), so two copies, one of them at QoS 1."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(topics.everything(RID), qos=0) == 0
    assert kds.subscribe(ORDERS, qos=1) == 1
    Bus(broker).send_publish(ORDERS, b"order 1", qos=1)
    got = kds.receive(2)
    assert [m.payload for m in got] == [b"order 1", b"order 1"], "one copy per matching subscription"
    assert max(m.qos for m in got) == 1, "the maximum QoS of the matching subscriptions [MQTT-3.3.5-1]"


# --- keepalive and the Last Will -------------------------------------------------------------


def test_mqtt_3_1_2_24_a_silent_client_is_dropped_after_one_and_a_half_keepalives_and_its_will_sent(broker):
    """[MQTT-3.1.2-24]: nothing from the client for 1.5 x Keep Alive: the broker disconnects it "as if
    the network had failed", so its Last Will is published [MQTT-3.1.2-8]. Not before the keepalive."""
    watch = _status_watch(broker)
    printer = _printer(broker)
    printer.connect(keepalive=1, will=(STATUS, b"lost", False))
    assert printer.sock is not None
    assert not raw.closed_by_peer(printer.sock, 1.2), "dropped before 1.5 x keepalive"
    printer.wait_closed(within=4.0)
    will = watch.publish()
    assert (will.topic, will.payload) == (STATUS, b"lost")
    watch.puback(will)


def test_mqtt_3_1_2_8_the_will_is_published_when_the_connection_drops(broker):
    """[MQTT-3.1.2-8]: a network failure (the socket closes, no DISCONNECT) publishes the Will; here
    a third-party client (paho) receives it."""
    watch = Subscriber(broker.port, "dash-1", broker.token("dash-1", "staff"))
    try:
        assert watch.connect() == 0
        assert watch.subscribe(STATUS, qos=1) == 1
        printer = _printer(broker)
        printer.connect(will=(STATUS, b"lost", False))
        printer.drop()
        [will] = watch.collect(1)
        assert (will.topic, will.payload) == (STATUS, b"lost")
    finally:
        watch.close()


def test_mqtt_3_1_2_10_no_will_after_disconnect(broker):
    """[MQTT-3.1.2-10]: DISCONNECT discards the Will. The bus publishes a marker on the same topic
    after the broker closed the connection: the marker is the first thing the watcher gets."""
    watch = _status_watch(broker)
    printer = _printer(broker)
    printer.connect(will=(STATUS, b"lost", False))
    printer.disconnect()
    Bus(broker).send_publish(STATUS, b"marker", qos=1)
    got = watch.publish()
    watch.puback(got)
    assert got.payload == b"marker", f"the Will was published after DISCONNECT: {got}"


def test_mqtt_3_1_4_2_a_takeover_closes_the_old_connection_and_publishes_its_will(broker):
    """[MQTT-3.1.4-2]: a CONNECT with a client id already connected closes the old connection. That
    connection ended without DISCONNECT, so its Will is published [MQTT-3.1.2-8], once; the new
    connection's Will is not."""
    watch = _status_watch(broker)
    printer = _printer(broker)
    printer.connect(will=(STATUS, b"lost", False))
    old = printer.sock
    assert old is not None
    printer.sock = None
    printer.connect(will=(STATUS, b"lost again", False))
    assert raw.closed_by_peer(old, 5.0), "the old connection was kept [MQTT-3.1.4-2]"
    old.close()
    assert [(m.payload, m.retain) for m in watch.receive(1)] == [(b"lost", False)]


def test_mqtt_3_1_2_17_a_will_with_retain_is_published_retained(broker):
    """[MQTT-3.1.2-17]: Will Retain 1: the Will is published as a retained message. The live copy
    says RETAIN=0 [MQTT-3.3.1-9]; a later subscriber gets it as retained state [MQTT-3.3.1-8]."""
    watch = _status_watch(broker)
    printer = _printer(broker)
    printer.connect(will=(STATUS, b"lost", True))
    printer.drop()
    live = watch.publish()
    watch.puback(live)
    assert (live.topic, live.payload, live.retain) == (STATUS, b"lost", False)

    later = RawClient(broker, "dash-2")
    later.connect()
    assert later.subscribe(STATUS, qos=1) == 1
    assert [(m.payload, m.retain) for m in later.receive(1)] == [(b"lost", True)]


# --- retained messages -----------------------------------------------------------------------


def test_mqtt_3_3_1_10_and_11_a_zero_length_retained_publish_clears_the_retained_message(broker):
    """[MQTT-3.3.1-10]: a RETAIN=1 PUBLISH with no payload is forwarded as usual and removes the
    topic's retained message; [MQTT-3.3.1-11]: it is not stored itself. A new subscriber gets the
    retained message of the other topic only."""
    bus = Bus(broker)
    cleared, kept = topics.open_order(RID, 1), topics.open_order(RID, 2)
    bus.send_publish(cleared, b"open 1", qos=1, retain=True)
    bus.send_publish(kept, b"open 2", qos=1, retain=True)
    bus.send_publish(cleared, b"", qos=1, retain=True)  # returns once the watcher got the empty copy

    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(topics.open_orders(RID), qos=1) == 1
    got = kds.receive(1)
    assert [(m.topic, m.payload, m.retain) for m in got] == [(kept, b"open 2", True)]


# --- QoS 2 from a publisher ------------------------------------------------------------------


def test_mqtt_4_3_3_2_a_qos2_publish_sent_again_before_pubrel_is_delivered_once(broker):
    """[MQTT-4.3.3-2] §4.3.3: the publisher resends its QoS 2 PUBLISH (DUP=1, same id) before PUBREL,
    as after a lost PUBREC; the broker answers PUBREC again and delivers the message exactly once."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(ORDERS, qos=2) == 2
    bus = Bus(broker)
    publish = raw.publish(ORDERS, b"once", qos=2, packet_id=7)
    bus.send(publish)
    bus.expect(PUBREC, 7)
    bus.send(bytes([publish[0] | 0x08]) + publish[1:])  # DUP=1
    bus.expect(PUBREC, 7)
    bus.send(raw.pubrel(7))
    bus.expect(PUBCOMP, 7)

    got = kds.publish()
    assert (got.payload, got.qos, got.dup) == (b"once", 2, False)
    assert got.packet_id is not None
    kds.send(raw.pubrec(got.packet_id))
    kds.expect(PUBREL, got.packet_id)
    kds.send(raw.pubcomp(got.packet_id))
    assert kds.quiet() == [], "delivered twice"


# --- UNSUBSCRIBE -----------------------------------------------------------------------------


def test_mqtt_3_10_4_unsubscribe_stops_delivery_and_is_acknowledged_with_its_id(broker):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-2]: the subscription is deleted and delivery stops; [MQTT-3.10.4-4]
    UNSUBACK carries the UNSUBSCRIBE's packet id; [MQTT-3.10.4-5] also when nothing was subscribed."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(ORDERS, qos=1) == 1
    bus = Bus(broker)
    bus.send_publish(ORDERS, b"before")
    kds.puback(kds.publish())
    kds.unsubscribe(ORDERS, packet_id=0x1234)  # asserts UNSUBACK with id 0x1234
    bus.send_publish(ORDERS, b"after")
    assert kds.quiet() == [], "delivery went on after UNSUBACK"
    kds.unsubscribe(topics.channel(RID, topics.MENU), packet_id=0xFFFF)  # never subscribed: UNSUBACK all the same


# --- CONNECT rules ---------------------------------------------------------------------------


def test_mqtt_3_1_0_2_a_second_connect_closes_the_connection(broker):
    """[MQTT-3.1.0-2]: a second CONNECT is a protocol violation; the broker disconnects the client."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    kds.send(raw.connect("kds-1", kds.token))
    with pytest.raises(Closed):
        frame = kds.frame()  # a CONNACK (or anything) here would be answering the second CONNECT
        raise AssertionError(f"the broker answered a second CONNECT with {frame}")


def test_mqtt_3_1_2_1_a_foreign_protocol_name_is_closed_without_connack(broker):
    """[MQTT-3.1.2-1]: a CONNECT whose protocol name is not "MQTT" is not processed as MQTT 3.1.1:
    this broker closes the connection and sends no CONNACK."""
    kds = RawClient(broker, "kds-1")
    kds.open()
    kds.send(raw.connect("kds-1", kds.token, protocol="MQTX"))
    with pytest.raises(Closed):
        frame = kds.frame()
        raise AssertionError(f"the broker answered a foreign protocol name with {frame}")


# --- packet ids and PING ---------------------------------------------------------------------


@pytest.mark.parametrize("packet_id", [1, 0x0102, 0xFFFF])
def test_mqtt_3_8_4_2_suback_carries_the_subscribe_packet_id(broker, packet_id):
    """[MQTT-3.8.4-2]: the SUBACK has the SUBSCRIBE's packet id (RawClient.subscribe asserts it)."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(ORDERS, qos=1, packet_id=packet_id) == 1


@pytest.mark.parametrize("packet_id", [1, 0x0201, 0xFFFF])
def test_mqtt_2_3_1_6_puback_carries_the_publish_packet_id(broker, packet_id):
    """[MQTT-2.3.1-6] (§4.3.2): the PUBACK for a QoS 1 PUBLISH has that PUBLISH's packet id."""
    bus = Bus(broker)
    bus.send(raw.publish(ORDERS, b"order 1", qos=1, packet_id=packet_id))
    first, body = bus.frame()
    assert (first >> 4, body) == (PUBACK, struct.pack("!H", packet_id))


def test_mqtt_3_12_4_1_pingreq_is_answered_with_pingresp(broker):
    """[MQTT-3.12.4-1]: the Server MUST send a PINGRESP in response to a PINGREQ."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    for _ in range(3):
        kds.send(raw.PINGREQ)
        assert kds.frame() == (PINGRESP << 4, b"")
