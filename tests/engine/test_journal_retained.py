"""The retained store is journaled like a persistent session's queue: the PUBACK of a QoS 1 retained
PUBLISH waits until the journal says the retained message is durable, so a broker killed after
acknowledging it still has it (issue 12 item 6); a QoS 0 one is never waited for."""

from __future__ import annotations

from core import topics
from scripts import raw_mqtt as raw
from tests.engine.test_journal import Recorder
from tests.protocol.client import RID, RawClient


def test_the_puback_of_a_retained_publish_waits_for_the_journal(make_broker):
    journal = Recorder()
    broker = make_broker(journal=journal)
    bus = RawClient(broker, "bus-1", "service", rid=None)
    bus.connect()
    state = topics.open_order(RID, 1)
    bus.send(raw.publish(state, b"open", qos=1, retain=True, packet_id=5))
    assert bus.try_frame(0.5) is None, "acknowledged before the retained message was durable"
    assert ("retained", state, b"open", 1) in journal.calls
    broker.loop.call_soon_threadsafe(journal.commit)
    assert bus.frame() == (0x40, b"\x00\x05")

    bus.send(raw.publish(state, b"", qos=1, retain=True, packet_id=6))  # cleared [MQTT-3.3.1-10]
    assert bus.try_frame(0.5) is None
    assert ("retained_cleared", state) in journal.calls
    broker.loop.call_soon_threadsafe(journal.commit)
    assert bus.frame() == (0x40, b"\x00\x06")
