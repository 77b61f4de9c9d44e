"""Issue 12, item 2: a message is delivered at the minimum of its publish QoS and the subscription's
granted QoS [MQTT-3.8.4-6], §3.3.5 ("respecting the subscription's QoS"). A QoS 0 message never
gains a packet id and a PUBACK obligation on the way to a QoS 1 subscriber."""

from __future__ import annotations

import pytest

from core import topics
from tests.protocol.client import RID, Bus, RawClient

ORDERS = topics.channel(RID, topics.ORDERS)


@pytest.mark.parametrize(
    ("published", "granted", "delivered"),
    [(0, 1, 0), (0, 2, 0), (1, 0, 0), (1, 1, 1), (1, 2, 1)],
    ids=lambda q: str(q),
)
def test_mqtt_3_8_4_6_delivered_qos_is_the_minimum_of_publish_and_granted(broker, published, granted, delivered):
    """[MQTT-3.8.4-6] [MQTT-2.3.1-5]: delivered at min(publish, granted); a QoS 0 PUBLISH has no packet id."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(ORDERS, qos=granted) == granted
    Bus(broker).send_publish(ORDERS, b"order 1", qos=published)
    got = kds.publish()
    assert (got.payload, got.qos) == (b"order 1", delivered)
    assert (got.packet_id is None) == (delivered == 0)
    if got.qos:
        kds.puback(got)
    assert kds.quiet() == []


def test_mqtt_3_8_4_6_a_retained_qos0_message_reaches_a_qos2_subscription_at_qos0(broker):
    """[MQTT-3.8.4-6] [MQTT-3.3.1-6]: the retained copy sent for a new subscription keeps its QoS 0 too."""
    topic = topics.open_order(RID, 1)
    Bus(broker).send_publish(topic, b"open 1", qos=0, retain=True)
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(topics.open_orders(RID), qos=2) == 2
    got = kds.publish()
    assert (got.topic, got.payload, got.qos, got.retain, got.packet_id) == (topic, b"open 1", 0, True, None)
    assert kds.quiet() == []


def test_mqtt_3_3_5_each_copy_for_overlapping_subscriptions_respects_its_subscription_qos(broker):
    """§3.3.5: the broker sends one copy per matching subscription (see test_pinned's overlapping
    test); then each copy respects its own subscription's QoS ("respecting the subscription's QoS in
    each case"): a QoS 1 message matching a QoS 0 and a QoS 1 filter comes once at 0 and once at 1."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(ORDERS, qos=1) == 1
    assert kds.subscribe(topics.everything(RID), qos=0) == 0
    Bus(broker).send_publish(ORDERS, b"order 1", qos=1)
    got = kds.receive(2)
    assert sorted(m.qos for m in got) == [0, 1], got


def test_mqtt_3_8_4_3_subscribing_again_replaces_the_subscription_and_resends_retained(broker):
    """[MQTT-3.8.4-3]: a SUBSCRIBE with a filter the session already has replaces that subscription
    (its new QoS applies, deliveries are not doubled) and the retained messages are sent again. amqtt
    kept the first subscription's QoS 1 after a SUBSCRIBE at QoS 0."""
    Bus(broker).send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(topics.open_orders(RID), qos=1) == 1
    assert [(m.payload, m.qos, m.retain) for m in kds.receive(1)] == [(b"open 1", 1, True)]
    assert kds.subscribe(topics.open_orders(RID), qos=0) == 0
    assert [(m.payload, m.qos, m.retain) for m in kds.receive(1)] == [(b"open 1", 0, True)]

    Bus(broker).send_publish(topics.open_order(RID, 2), b"open 2", qos=1, retain=True)
    assert [(m.payload, m.qos, m.retain) for m in kds.receive(1)] == [(b"open 2", 0, False)]
