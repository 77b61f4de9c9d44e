"""broker.codec against amqtt's own packet decoder and against bytes written out from the standard."""

from __future__ import annotations

import struct

import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from broker import codec
from broker.delivery import Message
from broker.transport import websocket_frame
from tests.support import run_async

TOPICS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="+#\x00"), min_size=1, max_size=40)


def decode_publish(data: bytes) -> PublishPacket:
    async def read() -> PublishPacket:
        reader = BufferReader(data)
        header = await MQTTFixedHeader.from_stream(reader)
        return await PublishPacket.from_stream(reader, fixed_header=header)

    return run_async(read())


def encoded(message: Message, header: int, packet_id: int) -> bytes:
    if header == 0x30:
        return message.plain()
    head = message.head(1 if header & 0x06 else 0)
    pid = codec.pack_packet_id(packet_id) if header & 0x06 else b""
    return codec.BYTE[header] + head + pid + message.data


@given(
    topic=TOPICS,
    payload=st.binary(max_size=300),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    packet_id=st.integers(1, 65535),
)
def test_a_publish_decodes_with_amqtt_to_what_was_encoded(topic, payload, qos, retain, dup, packet_id):
    packet = decode_publish(encoded(Message(topic, payload, qos), codec.publish_header(qos, retain, dup), packet_id))
    assert packet.topic_name == topic
    assert packet.data == payload
    assert packet.qos == qos and packet.retain_flag == retain
    assert packet.dup_flag == (dup and qos > 0)  # DUP is 0 on every QoS 0 PUBLISH [MQTT-3.3.1-2]
    assert packet.packet_id == (packet_id if qos else None)


def test_publish_bytes_follow_the_standard():
    """§3.3: header 0011 DUP QoS RETAIN, remaining length, topic (length-prefixed), packet id at QoS > 0."""
    message = Message("a/b", b"hi", 1)
    assert message.plain() == b"\x30\x07\x00\x03a/bhi"
    assert encoded(message, codec.publish_header(1, dup=True), 10) == b"\x3a\x09\x00\x03a/b\x00\x0ahi"
    assert encoded(message, codec.publish_header(2, retain=True), 258) == b"\x35\x09\x00\x03a/b\x01\x02hi"
    big = Message("t", b"x" * 200, 0)
    assert big.plain()[:3] == b"\x30\xcb\x01"  # 203 in two length bytes


@pytest.mark.parametrize("n", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455])
def test_remaining_length_round_trips(n):
    data = b"\x30" + codec.remaining_length(n)
    assert codec.read_remaining_length(data, 1) == (n, len(data))


def test_an_incomplete_or_five_byte_remaining_length_is_not_read():
    assert codec.read_remaining_length(b"\x30\x80", 1) is None
    assert codec.read_remaining_length(b"\x30\xff\xff\xff\xff\x01", 1) is None


def test_acknowledgements_follow_the_standard():
    assert codec.ack(codec.PUBACK, 1) == b"\x40\x02\x00\x01"
    assert codec.ack(codec.PUBREC, 513) == b"\x50\x02\x02\x01"
    assert codec.ack(codec.PUBREL, 7) == b"\x62\x02\x00\x07"  # PUBREL's flags are 0010 [MQTT-3.6.1-1]
    assert codec.ack(codec.PUBCOMP, 7) == b"\x70\x02\x00\x07"
    assert codec.ack(codec.UNSUBACK, 9) == b"\xb0\x02\x00\x09"
    assert codec.connack(True, 0) == b"\x20\x02\x01\x00"
    assert codec.connack(True, 5) == b"\x20\x02\x00\x05"  # session present only when accepted [MQTT-3.2.2-4]


def test_a_suback_decodes_with_amqtt():
    async def read() -> SubackPacket:
        reader = BufferReader(codec.suback(300, [0, 1, 2, 0x80]))
        header = await MQTTFixedHeader.from_stream(reader)
        return await SubackPacket.from_stream(reader, fixed_header=header)

    packet = run_async(read())
    assert packet.variable_header is not None and packet.variable_header.packet_id == 300
    assert packet.payload is not None and packet.payload.return_codes == [0, 1, 2, 0x80]


def test_a_subscribe_and_unsubscribe_are_parsed():
    body = struct.pack("!H", 5) + b"\x00\x03a/#\x01" + b"\x00\x01b\x02"
    assert codec.parse_subscribe(body) == (5, [("a/#", 1), ("b", 2)])
    assert codec.parse_unsubscribe(struct.pack("!H", 6) + b"\x00\x03a/#") == (6, ["a/#"])


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (codec.parse_subscribe, b"\x00\x01\x00\x05ab"),  # a filter longer than the packet
        (codec.parse_subscribe, b"\x00\x01\x00\x01a"),  # no QoS byte
        (codec.parse_subscribe, b"\x00"),
        (codec.parse_unsubscribe, b"\x00\x01\x00\x09a"),
        (codec.packet_id, b"\x00"),
        (lambda body: codec.parse_publish(0x02, body), b"\x00\x01a\x00"),  # QoS 1 without room for its id
    ],
)
def test_a_field_past_the_end_of_the_packet_is_malformed(parse, body):
    with pytest.raises(codec.Malformed) as refused:
        parse(body)
    assert refused.value.reason == "bad_remaining_length"


def test_a_subscribe_without_filters_is_malformed():
    """[MQTT-3.8.3-3]: at least one filter; [MQTT-3.10.3-2] likewise for UNSUBSCRIBE."""
    with pytest.raises(codec.Malformed):
        codec.parse_subscribe(b"\x00\x01")
    with pytest.raises(codec.Malformed):
        codec.parse_unsubscribe(b"\x00\x01")


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_a_websocket_frame_is_what_websockets_itself_would_send(size):
    """RFC 6455 §5.2: a server's frames are unmasked; the length takes 1, 3 or 9 bytes."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert websocket_frame(data) == Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])
