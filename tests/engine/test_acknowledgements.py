"""Acknowledgements the broker did not ask for are ignored and counted, as MQTT 3.1.1 allows; the
connection and every other session go on."""

from __future__ import annotations

import pytest

from broker.stats import IGNORED
from core import topics
from scripts import raw_mqtt as raw
from tests.protocol.client import RID, Bus, RawClient


def ignored() -> float:
    return IGNORED.labels(reason="unknown_packet_id")._value.get()


@pytest.mark.parametrize(("kind", "answer"), [(0x40, None), (0x50, None), (0x70, None), (0x62, 0x70)])
def test_an_acknowledgement_for_an_unknown_packet_id_is_ignored_and_counted(broker, kind, answer):
    """PUBACK, PUBREC, PUBCOMP for nothing in flight: ignored. PUBREL for nothing received: answered
    with PUBCOMP all the same (the receiver answers every PUBREL [MQTT-4.3.3-2]), so a client finishing a
    flow from before a restart is not left waiting."""
    client = RawClient(broker, "dash")
    client.connect()
    before = ignored()
    client.send(raw.packet(kind, b"\x12\x34"))
    if answer is not None:
        first, body = client.frame()
        assert (first, body) == (answer, b"\x12\x34")
    client.send(raw.PINGREQ)
    assert client.frame() == (0xD0, b"")  # still connected
    assert ignored() == before + 1


def test_a_puback_ends_only_its_own_delivery(broker):
    """A PUBACK with another delivery's id does not complete the one still owed."""
    kds = RawClient(broker, "kds-1")
    assert kds.connect(clean=False) is False
    orders = topics.orders(RID)
    assert kds.subscribe(orders, qos=1) == 1
    bus = Bus(broker)
    bus.send_publish(orders, b"first")
    [first] = kds.publishes(1)
    assert first.packet_id is not None
    before = ignored()
    kds.send(raw.packet(0x40, (first.packet_id % 65535 + 1).to_bytes(2, "big")))
    kds.drop()
    assert kds.connect(clean=False) is True
    [again] = kds.publishes(1)
    assert (again.payload, again.dup, again.packet_id) == (b"first", True, first.packet_id)
    assert ignored() == before + 1
