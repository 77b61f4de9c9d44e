"""`broker.guard.Framing`, the byte-stream check every client connection passes through: it never raises,
it accepts every valid packet however the bytes are split, and it names the first violation of MQTT 3.1.1
in a packet as soon as the offending byte arrives. The broker-level tests (counted, logged, connection
closed, other sessions untouched) are in tests/security/test_malformed.py and test_packets.py."""

from __future__ import annotations

import itertools
import struct

import pytest
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.guard import Framing
from core import topics
from scripts import raw_mqtt as raw

MAX = 4096
CONNECT = raw.connect("dash", "token")
TOPIC = topics.orders(7)
FILTER = topics.everything(7)


def framing() -> Framing:
    """A framing check past its connection's CONNECT, where every rule applies."""
    check = Framing(MAX)
    assert check.feed(CONNECT) is None
    return check


def feed_in(check: Framing, data: bytes, cuts: list[int]) -> str | None:
    """Feed `data` in pieces cut at `cuts`; the first reason given, or None."""
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(bounds):
        if reason := check.feed(data[start:end]):
            return reason
    return None


# --- valid packets, built by amqtt's encoders and by scripts/raw_mqtt.py --------------------------

_names = st.text(st.characters(blacklist_characters="+#/\x00", blacklist_categories=["Cs"]), min_size=1, max_size=8)
_topic_names = st.lists(_names, min_size=1, max_size=4).map("/".join).filter(lambda t: not t.startswith("$"))
_filters = st.lists(st.one_of(_names, st.just("+")), min_size=1, max_size=4).map("/".join) | st.just("#")
_ids = st.integers(1, 0xFFFF)


def _publish(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int) -> bytes:
    packet = PublishPacket.build(topic, payload, packet_id if qos else None, dup and qos > 0, qos, retain)
    return bytes(packet.to_bytes())


_valid = st.one_of(
    st.builds(_publish, _topic_names, st.binary(max_size=200), st.integers(0, 2), st.booleans(), st.booleans(), _ids),
    st.builds(
        lambda filters, pid: bytes(SubscribePacket.build(filters, pid).to_bytes()),
        st.lists(st.tuples(_filters, st.integers(0, 2)), min_size=1, max_size=5),
        _ids,
    ),
    st.builds(
        lambda filters, pid: bytes(UnsubscribePacket.build(filters, pid).to_bytes()),
        st.lists(_filters, min_size=1, max_size=5),
        _ids,
    ),
    st.builds(lambda pid: bytes(PubackPacket.build(pid).to_bytes()), st.integers(0, 0xFFFF)),
    st.builds(lambda pid: bytes(PubrecPacket.build(pid).to_bytes()), st.integers(0, 0xFFFF)),
    st.builds(lambda pid: bytes(PubrelPacket.build(pid).to_bytes()), st.integers(0, 0xFFFF)),
    st.builds(lambda pid: bytes(PubcompPacket.build(pid).to_bytes()), st.integers(0, 0xFFFF)),
    st.just(bytes(PingReqPacket().to_bytes())),
    st.builds(
        lambda t, p, q, pid: raw.publish(t, p, qos=q, packet_id=pid), _topic_names, st.binary(), st.integers(0, 2), _ids
    ),
    st.builds(lambda f, q, pid: raw.subscribe(f, packet_id=pid, qos=q), _filters, st.integers(0, 2), _ids),
    st.builds(
        lambda fs, pid: raw.unsubscribe_filters(fs, packet_id=pid), st.lists(_filters, min_size=1, max_size=3), _ids
    ),
    st.builds(lambda kind, pid: raw.ack(kind, pid), st.sampled_from([4, 5, 6, 7]), st.integers(0, 0xFFFF)),
    st.just(raw.PINGREQ),
)


@settings(max_examples=400, deadline=None)
@given(packets=st.lists(_valid, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_valid_packets_are_always_accepted_however_they_are_split(packets, cuts):
    check = framing()
    stream = b"".join(packets) + bytes(DisconnectPacket().to_bytes())
    assert feed_in(check, stream, cuts) is None
    assert check.packets == 1 + len(packets) + 1
    assert not check.header and not check.body_left and not check.body  # exactly at a packet boundary


@settings(max_examples=500, deadline=None)
@given(junk=st.binary(max_size=400), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_random_bytes_never_raise(junk, cuts):
    reason = feed_in(framing(), junk, cuts)
    assert reason is None or isinstance(reason, str)


_any_packet = st.builds(raw.packet, st.integers(0, 255), st.binary(max_size=120))


@settings(max_examples=500, deadline=None)
@given(packets=st.lists(_any_packet, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_random_packets_never_raise_and_the_verdict_does_not_depend_on_how_they_are_split(packets, cuts):
    """Well-framed packets with random type, flags and body: whatever the pieces, the same first reason."""
    stream = b"".join(packets)
    assert feed_in(framing(), stream, cuts) == framing().feed(stream)


def test_a_first_connect_with_flags_is_refused_as_the_connect():
    """[MQTT-2.2.2-2]: CONNECT's fixed-header flags are reserved (0). The broker counts it as bad_connect."""
    assert Framing(MAX).feed(bytes([0x11]) + CONNECT[1:]) == "bad_flags"


# --- each violation, named as soon as its byte arrives ---------------------------------------------

SUB_FILTER = struct.pack("!H", len(FILTER)) + FILTER.encode()
VIOLATIONS = [
    # (reason, packet, the normative statement)
    ("bad_packet_id", raw.publish(TOPIC, b"x", qos=1, packet_id=0), "MQTT-2.3.1-1"),
    ("bad_packet_id", raw.publish(TOPIC, b"x", qos=2, packet_id=0), "MQTT-2.3.1-1"),
    ("bad_packet_id", raw.subscribe(FILTER, packet_id=0), "MQTT-2.3.1-1"),
    ("bad_packet_id", raw.unsubscribe_filters([FILTER], packet_id=0), "MQTT-2.3.1-1"),
    ("bad_qos", raw.subscribe(FILTER, qos=3), "MQTT-3.8.3-4"),
    ("bad_qos", raw.subscribe(FILTER, qos=0x81), "MQTT-3.8.3-4"),
    ("bad_qos", raw.subscribe(FILTER, qos=0x04), "MQTT-3.8.3-4"),
    ("bad_qos", raw.subscribe_filters([(FILTER, 1), (TOPIC, 3)]), "MQTT-3.8.3-4"),
    ("bad_qos", raw.publish(TOPIC, b"x", qos=3), "MQTT-3.3.1-4"),
    ("bad_flags", raw.subscribe_filters([(FILTER, 1)], flags=0), "MQTT-3.8.1-1"),
    ("bad_flags", raw.subscribe_filters([(FILTER, 1)], flags=0b1010), "MQTT-3.8.1-1"),
    ("bad_flags", raw.unsubscribe_filters([FILTER], flags=0), "MQTT-3.10.1-1"),
    ("bad_flags", raw.ack(6, 1, flags=0), "MQTT-3.6.1-1"),
    ("bad_flags", raw.ack(4, 1, flags=2), "MQTT-2.2.2-2"),
    ("bad_flags", bytes([0xC1, 0x00]), "MQTT-2.2.2-2"),
    ("bad_flags", bytes([0xE2, 0x00]), "MQTT-3.14.1-1"),
    ("no_topic_filter", raw.packet(0x82, struct.pack("!H", 1)), "MQTT-3.8.3-3"),
    ("no_topic_filter", raw.packet(0xA2, struct.pack("!H", 1)), "MQTT-3.10.3-2"),
    ("bad_topic_filter", raw.subscribe(FILTER.encode() + b"\x00", qos=1), "MQTT-1.5.3-2"),
    ("bad_topic_filter", raw.subscribe(FILTER.encode()[:-1] + b"\xff", qos=1), "MQTT-1.5.3-1"),
    ("bad_topic_filter", raw.subscribe(FILTER.encode()[:-1] + b"\xed\xa0\x80", qos=1), "MQTT-1.5.3-1"),  # U+D800
    ("bad_topic_filter", raw.unsubscribe_filters([b"a\x00b"]), "MQTT-1.5.3-2"),
    ("bad_topic_filter", raw.unsubscribe_filters([FILTER, b"\xc3"]), "MQTT-1.5.3-1"),
    ("bad_topic", raw.publish(b"a\xc0\xafb", b"x"), "MQTT-1.5.3-1"),  # an overlong '/'
    ("unexpected_packet", bytes([0x20, 0x02, 0x00, 0x00]), "MQTT-4.8.0-1"),  # CONNACK
    ("unexpected_packet", raw.packet(0x90, b"\x00\x01\x01"), "MQTT-4.8.0-1"),  # SUBACK
    ("unexpected_packet", raw.packet(0xB0, b"\x00\x01"), "MQTT-4.8.0-1"),  # UNSUBACK
    ("unexpected_packet", bytes([0xD0, 0x00]), "MQTT-4.8.0-1"),  # PINGRESP
    ("bad_remaining_length", raw.packet(0x40, b"\x00\x01\x00"), "MQTT-4.8.0-1"),  # a PUBACK is 2 bytes long
    ("bad_remaining_length", raw.packet(0x62, b"\x00"), "MQTT-4.8.0-1"),
    ("bad_remaining_length", raw.packet(0xC0, b"\x00"), "MQTT-4.8.0-1"),  # a PINGREQ has no body
    ("bad_remaining_length", raw.packet(0xE0, b"\x00"), "MQTT-4.8.0-1"),
    ("bad_remaining_length", raw.packet(0x82, struct.pack("!H", 1) + SUB_FILTER), "MQTT-4.8.0-1"),  # no QoS byte
    ("bad_remaining_length", raw.packet(0x82, struct.pack("!H", 1) + SUB_FILTER[:-1]), "MQTT-4.8.0-1"),
    ("bad_remaining_length", raw.packet(0x82, b"\x00"), "MQTT-4.8.0-1"),
    ("bad_remaining_length", raw.packet(0x32, struct.pack("!H", len(TOPIC)) + TOPIC.encode()), "MQTT-4.8.0-1"),
    ("second_connect", CONNECT, "MQTT-3.1.0-2"),
    ("reserved_packet_type", bytes([0xF0, 0x00]), "MQTT-2.2.1"),
]


@pytest.mark.parametrize(
    ("reason", "packet", "statement"), VIOLATIONS, ids=[f"{r}-{s}-{i}" for i, (r, _, s) in enumerate(VIOLATIONS)]
)
def test_a_violation_is_named_however_the_bytes_arrive(reason, packet, statement):
    """Fed one byte at a time (as amqtt reads a fixed header), and all at once behind valid packets (as a
    chunk reaches the engine's connection): the same reason, from the packet's own bytes."""
    check = framing()
    said = next((r for byte in packet if (r := check.feed(bytes([byte])))), None)
    assert said == reason, statement
    assert framing().feed(raw.PINGREQ + raw.subscribe(FILTER) + packet + raw.PINGREQ) == reason, statement


def test_a_publish_payload_is_not_held():
    """Only a PUBLISH's topic and packet id are read; its payload is counted, never buffered."""
    check = framing()
    assert check.feed(raw.publish(TOPIC, b"x" * 3000, qos=1)[:200]) is None
    assert not check.body and check.rule is None


def test_an_unknown_packet_id_in_an_acknowledgement_is_not_the_framings_business():
    """A PUBACK/PUBREC/PUBREL/PUBCOMP for an id not in flight is well-formed: the session ignores it
    (and counts it), the framing accepts it. Id 0 included: only SUBSCRIBE, UNSUBSCRIBE and PUBLISH
    QoS > 0 must carry a non-zero id [MQTT-2.3.1-1]."""
    check = framing()
    assert check.feed(raw.ack(4, 0) + raw.ack(5, 999) + raw.ack(6, 12) + raw.ack(7, 65535)) is None
