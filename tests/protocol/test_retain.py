"""Issue 12, item 3: RETAIN=1 only on a retained message sent because a subscription was made
[MQTT-3.3.1-8]; a message forwarded live, or queued for an offline session and delivered at its
reconnect, carries RETAIN=0 [MQTT-3.3.1-9] even when it was published retained. A dashboard reads
RETAIN=1 as "state as of before you came", RETAIN=0 as "this just happened"."""

from __future__ import annotations

from typing import Literal

import pytest

from core import topics
from tests.protocol.client import RID, Bus, RawClient, offline
from tests.support import Subscriber

ORDERS = topics.channel(RID, topics.ORDERS)


def _paho(broker, client_id: str, transport: Literal["tcp", "websockets"], clean_session: bool = True) -> Subscriber:
    port = broker.port if transport == "tcp" else broker.listeners.ws_port
    token = broker.token(client_id, "staff")
    return Subscriber(port, client_id, token, clean_session=clean_session, transport=transport)


def test_mqtt_3_3_1_9_a_retained_publish_forwarded_live_has_retain_0(broker):
    """[MQTT-3.3.1-9]: the broker forwards a RETAIN=1 PUBLISH to an existing subscriber with RETAIN=0."""
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(topics.open_orders(RID), qos=1) == 1
    Bus(broker).send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)
    got = kds.publish()
    assert (got.payload, got.qos, got.retain) == (b"open 1", 1, False)
    kds.puback(got)


def test_mqtt_3_3_1_8_a_retained_message_sent_for_a_new_subscription_has_retain_1(broker):
    """[MQTT-3.3.1-8] [MQTT-3.3.1-6]: the retained message sent because of a SUBSCRIBE carries RETAIN=1."""
    Bus(broker).send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)
    kds = RawClient(broker, "kds-1")
    kds.connect()
    assert kds.subscribe(topics.open_orders(RID), qos=1) == 1
    got = kds.publish()
    assert (got.payload, got.qos, got.retain) == (b"open 1", 1, True)
    kds.puback(got)
    assert kds.quiet() == []


def test_mqtt_3_3_1_9_messages_queued_for_an_offline_session_arrive_with_retain_0(broker):
    """[MQTT-3.3.1-9]: what was queued while a persistent session was offline is delivered at its
    reconnect with RETAIN=0, whether it was published retained or not."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=False) is False
    assert kds.subscribe(topics.open_orders(RID), qos=1) == 1
    assert kds.subscribe(ORDERS, qos=1) == 1
    kds.disconnect()
    offline(broker, "kds-1")
    bus = Bus(broker)
    bus.send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)
    bus.send_publish(ORDERS, b"order 1", qos=1)

    assert kds.connect(clean=False) is True
    got = kds.receive(2)
    queued = [(m.payload, m.retain) for m in got if m.qos == 1]
    assert queued == [(b"open 1", False), (b"order 1", False)], got


def test_mqtt_3_3_1_6_a_reconnect_makes_no_new_subscription_so_no_retained_copy(broker):
    """[MQTT-3.3.1-6]: retained messages are sent "when a new subscription is established"; a persistent
    session's reconnect establishes none, and issue 12 item 3 says RETAIN is 1 *only* for retained
    messages sent because of a new subscription. The queued copy (RETAIN=0) is all it gets. amqtt
    (and so far the rewrite, "as amqtt did") replays every retained message of the session's filters at
    QoS 0 RETAIN=1 on reconnect: a second copy of what was just delivered, which a screen processes
    twice. EMQX and HiveMQ send no such copy (emqx/emqx#349, hivemq/hivemq-mqtt-client#452): a client
    that wants the state again subscribes again [MQTT-3.8.4-3]."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=False) is False
    assert kds.subscribe(topics.open_orders(RID), qos=1) == 1
    kds.disconnect()
    offline(broker, "kds-1")
    Bus(broker).send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)

    assert kds.connect(clean=False) is True
    got = kds.receive(1)
    assert [(m.payload, m.qos, m.retain) for m in got] == [(b"open 1", 1, False)]


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt_3_3_1_8_and_9_a_third_party_client_sees_retain_only_on_the_subscription_copy(broker, transport):
    """[MQTT-3.3.1-8] [MQTT-3.3.1-9] through paho, over TCP and WebSocket: the retained copy at
    SUBSCRIBE says retained, the live one that follows does not."""
    bus = Bus(broker)
    bus.send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)
    screen = _paho(broker, "screen-1", transport)
    try:
        assert screen.connect() == 0
        assert screen.subscribe(topics.open_orders(RID), qos=1) == 1
        [first] = screen.collect(1)
        bus.send_publish(topics.open_order(RID, 2), b"open 2", qos=1, retain=True)
        [second] = screen.collect(1)
        assert [(m.payload, m.retain) for m in (first, second)] == [(b"open 1", True), (b"open 2", False)]
    finally:
        screen.close()


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt_3_3_1_9_a_third_party_persistent_client_gets_queued_messages_not_retained(broker, transport):
    """[MQTT-3.3.1-9] through paho: a persistent session's queued message, published retained while it
    was away, is delivered at its reconnect as not retained, and once (no retained replay, see
    test_mqtt_3_3_1_6_a_reconnect_makes_no_new_subscription_so_no_retained_copy)."""
    screen = _paho(broker, "screen-1", transport, clean_session=False)
    assert screen.connect() == 0
    assert screen.subscribe(topics.open_orders(RID), qos=1) == 1
    screen.close()
    offline(broker, "screen-1")
    Bus(broker).send_publish(topics.open_order(RID, 1), b"open 1", qos=1, retain=True)

    again = _paho(broker, "screen-1", transport, clean_session=False)
    try:
        assert again.connect() == 0
        got = again.collect(1)
        got += again.drain()
        assert [(m.payload, m.retain) for m in got] == [(b"open 1", False)]
    finally:
        again.close()
