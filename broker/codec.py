"""MQTT 3.1.1 packets as bytes: the bodies the broker parses after CONNECT, and the packets it sends.

Pure functions, no I/O. The framing of the byte stream (packet boundaries, size, reserved types,
a PUBLISH topic's validity) is `broker.guard.Framing`'s business; a body that passed it is parsed
here, and a field that runs past the body's end raises `Malformed("bad_remaining_length")`.

A PUBLISH goes out once per broadcast, to many subscribers: `publish_head` is the part every copy
shares (remaining length and topic), so a delivery costs a header byte, a packet id and the payload
reference, never a new encoding (see `broker.delivery.Message`).
"""

from __future__ import annotations

import struct

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

DUP, RETAIN = 0x08, 0x01
PINGRESP_PACKET = bytes([0xD0, 0x00])
BYTE = tuple(bytes([value]) for value in range(256))  # one shared object per fixed-header byte

_ACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
pack_packet_id = _U16.pack


class Malformed(Exception):
    """A packet body that breaks MQTT 3.1.1; the connection is closed with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_remaining_length(data: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """(length, offset of the body) of the fixed header whose length starts at `at`; None if incomplete
    or longer than 4 bytes (the framing check names that violation)."""
    length = shift = 0
    for index in range(at, min(at + 4, len(data))):
        byte = data[index]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length, index + 1
        shift += 7
    return None


# --- sending ---------------------------------------------------------------------------------


def publish_head(topic: bytes, payload_size: int, qos: int) -> bytes:
    """Remaining length + topic of a PUBLISH: what follows the header byte, before the packet id."""
    body = 2 + len(topic) + (2 if qos else 0) + payload_size
    return remaining_length(body) + _U16.pack(len(topic)) + topic


def publish_header(qos: int, retain: bool = False, dup: bool = False) -> int:
    return 0x30 | (qos << 1) | (RETAIN if retain else 0) | (DUP if dup and qos else 0)


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0010) or PUBCOMP, UNSUBACK for `packet_id`."""
    return _ACK.pack((kind << 4) | (0x02 if kind == PUBREL else 0), 2, packet_id)


def suback(packet_id: int, codes: list[int]) -> bytes:
    return bytes([SUBACK << 4]) + remaining_length(2 + len(codes)) + _U16.pack(packet_id) + bytes(codes)


def connack(session_present: bool, code: int) -> bytes:
    return bytes([CONNACK << 4, 2, 1 if session_present and code == 0 else 0, code])


# --- receiving -------------------------------------------------------------------------------


def _string(body: bytes, at: int) -> tuple[bytes, int]:
    if at + 2 > len(body):
        raise Malformed("bad_remaining_length")
    end = at + 2 + _U16.unpack_from(body, at)[0]
    if end > len(body):
        raise Malformed("bad_remaining_length")
    return body[at + 2 : end], end


def packet_id(body: bytes) -> int:
    """The packet id of a PUBACK, PUBREC, PUBREL or PUBCOMP (exactly 2 bytes)."""
    if len(body) != 2:
        raise Malformed("bad_remaining_length")
    return int(_U16.unpack(body)[0])


def parse_publish(flags: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id or 0 at QoS 0, payload); the framing check has vetted the topic and QoS."""
    topic, at = _string(body, 0)
    pid = 0
    if flags & 0x06:
        if at + 2 > len(body):
            raise Malformed("bad_remaining_length")
        pid = _U16.unpack_from(body, at)[0]
        at += 2
    return topic.decode("utf-8"), pid, body[at:]


def _text(raw: bytes) -> str:
    """A filter as text. Not UTF-8: amqtt's rendering, its Python repr ("b'...'"), which no ACL pattern
    covers, so the subscription is refused and counted like any other outside the token."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return str(raw)


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    if len(body) < 2:
        raise Malformed("bad_remaining_length")
    pid, at, topics = _U16.unpack_from(body, 0)[0], 2, []
    while at < len(body):
        raw, at = _string(body, at)
        if at >= len(body):
            raise Malformed("bad_remaining_length")
        topics.append((_text(raw), body[at]))
        at += 1
    if not topics:  # [MQTT-3.8.3-3]
        raise Malformed("empty_subscribe")
    return pid, topics


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    if len(body) < 2:
        raise Malformed("bad_remaining_length")
    pid, at, filters = _U16.unpack_from(body, 0)[0], 2, []
    while at < len(body):
        raw, at = _string(body, at)
        filters.append(_text(raw))
    if not filters:  # [MQTT-3.10.3-2]
        raise Malformed("empty_unsubscribe")
    return pid, filters
