"""Issue 12, item 4: CleanSession=1 means a session that lasts as long as its connection
[MQTT-3.1.2-6]; nothing of it is found by the next connection, however soon that comes, and
Session Present says so [MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.2.2-3]."""

from __future__ import annotations

import time

import pytest

from core import topics
from tests.protocol.client import RID, Bus, RawClient, offline

ORDERS = topics.channel(RID, topics.ORDERS)


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["at-once", "within-100ms"])
def test_mqtt_3_1_2_6_a_clean_session_ends_with_its_connection(broker, pause):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.2.2-3]: after a CleanSession=1 connection ends, a
    CleanSession=0 reconnect finds no session (Session Present 0) and no subscription of the old
    one; the session it starts is persistent from then on [MQTT-3.1.2-4] [MQTT-3.2.2-2]."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=True) is False, "CleanSession=1: Session Present 0 [MQTT-3.2.2-1]"
    assert kds.subscribe(ORDERS, qos=1) == 1
    kds.disconnect()
    time.sleep(pause)  # the reconnect comes this soon after the broker closed the old connection
    assert kds.connect(clean=False) is False, f"the clean session was kept: Session Present 1, {pause * 1000:.0f} ms on"
    bus = Bus(broker)
    bus.send_publish(ORDERS, b"for the old subscription")
    assert kds.quiet() == [], "a message for a subscription made in the ended clean session"

    assert kds.subscribe(ORDERS, qos=1) == 1
    kds.disconnect()
    offline(broker, "kds-1")
    bus.send_publish(ORDERS, b"while away")
    assert kds.connect(clean=False) is True, "the new persistent session is stored [MQTT-3.2.2-2]"
    got = kds.publish()
    assert (got.payload, got.qos) == (b"while away", 1)
    kds.puback(got)
    assert kds.quiet() == []


def test_mqtt_3_1_2_6_a_clean_connect_discards_a_persistent_session(broker):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-1]: CleanSession=1 on a client id with a stored session discards it:
    Session Present 0, its queued messages and its subscriptions are gone; and once that clean
    connection ends, nothing is stored for the id [MQTT-3.2.2-3]."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=False) is False
    assert kds.subscribe(ORDERS, qos=1) == 1
    kds.disconnect()
    offline(broker, "kds-1")
    bus = Bus(broker)
    bus.send_publish(ORDERS, b"queued")

    assert kds.connect(clean=True) is False, "CleanSession=1: Session Present 0 [MQTT-3.2.2-1]"
    assert kds.quiet() == [], "the discarded session's queue was delivered"
    bus.send_publish(ORDERS, b"for the old subscription")
    assert kds.quiet() == [], "the discarded session's subscription still delivers"
    kds.disconnect()

    assert kds.connect(clean=False) is False, "nothing is stored after a clean session [MQTT-3.2.2-3]"
    assert kds.quiet() == []
