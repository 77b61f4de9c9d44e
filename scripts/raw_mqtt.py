"""Hand-built MQTT 3.1.1 packets over plain sockets: for what a well-behaved client library refuses to
send (the security tests), for the flags and packet ids a library hides or answers by itself (the
protocol tests), and for thousands of connections that cost no client library (the broker benchmark)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + remaining_length(len(body)) + body


def connect(
    client_id: str,
    password: str | None = None,
    *,
    keepalive: int = 30,
    clean: bool = True,
    will: tuple[str, bytes, bool] | None = None,
    username: str | None = None,
    protocol: str = "MQTT",
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, retain = will
        flags |= 0x04 | 0x08 | (0x20 if retain else 0)  # will flag, QoS 1, retain
        payload += _string(topic) + _string(message)
    username = username if username is not None else (client_id if password is not None else None)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    header = _string(protocol) + bytes([4, flags]) + struct.pack("!H", keepalive)
    return packet(0x10, header + payload)


def subscribe(topic_filter: str | bytes, packet_id: int = 1, qos: int = 1) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos]))


def publish(topic: str | bytes, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 1) -> bytes:
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(first, body)


def unsubscribe(topic_filter: str | bytes, packet_id: int = 1) -> bytes:
    return packet(0xA2, struct.pack("!H", packet_id) + _string(topic_filter))


def puback(packet_id: int) -> bytes:
    return packet(0x40, struct.pack("!H", packet_id))


def pubrec(packet_id: int) -> bytes:
    return packet(0x50, struct.pack("!H", packet_id))


def pubrel(packet_id: int) -> bytes:
    return packet(0x62, struct.pack("!H", packet_id))  # flags 0010 [MQTT-3.6.1-1]


def pubcomp(packet_id: int) -> bytes:
    return packet(0x70, struct.pack("!H", packet_id))


PINGREQ = bytes([0xC0, 0x00])
DISCONNECT = bytes([0xE0, 0x00])


def open_socket(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """(packet type, body) or None when the broker closed the connection."""
    answer = read_frame(sock)
    return None if answer is None else (answer[0] >> 4, answer[1])


def read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    """(first byte: type and flags, body) or None when the broker closed the connection."""
    first = sock.recv(1)
    if not first:
        return None
    length, multiplier = 0, 1
    while True:
        byte = sock.recv(1)
        if not byte:
            return None
        length += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return first[0], body


@dataclass(frozen=True)
class Publish:
    """A PUBLISH as the broker sent it: the fixed header's flags too, which the protocol tests judge."""

    topic: str
    payload: bytes
    qos: int
    dup: bool
    retain: bool
    packet_id: int | None  # None at QoS 0, which carries none


def parse_publish(first_byte: int, body: bytes) -> Publish:
    """A PUBLISH frame (`read_frame`) taken apart."""
    assert first_byte >> 4 == 3, f"expected PUBLISH, got packet type {first_byte >> 4}"
    qos = (first_byte >> 1) & 0x03
    (length,) = struct.unpack("!H", body[:2])
    topic, rest = body[2 : 2 + length].decode(), body[2 + length :]
    packet_id = None
    if qos:
        (packet_id,), rest = struct.unpack("!H", rest[:2]), rest[2:]
    return Publish(topic, rest, qos, bool(first_byte & 0x08), bool(first_byte & 0x01), packet_id)


def parse_connack(body: bytes) -> tuple[bool, int]:
    """(session present, return code) of a CONNACK body."""
    assert len(body) == 2, f"a CONNACK body is 2 bytes, got {body!r}"
    return bool(body[0] & 0x01), body[1]


def expect_packet(sock: socket.socket) -> tuple[int, bytes]:
    """The next packet, which the broker must send (an AssertionError if it closes the connection)."""
    answer = read_packet(sock)
    assert answer is not None, "the broker closed the connection"
    return answer


def connack_code(sock: socket.socket) -> int | None:
    answer = read_packet(sock)
    if answer is None:
        return None
    kind, body = answer
    assert kind == 2, f"expected CONNACK, got packet type {kind}"
    return body[1]


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the broker closes the connection within `within` seconds."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


# --- packets bent out of shape (the security tests): any flags, packet id, QoS byte or filter bytes -----


def subscribe_filters(filters: list[tuple[str | bytes, int]], packet_id: int = 1, *, flags: int = 0b0010) -> bytes:
    """A SUBSCRIBE of several (filter, requested QoS byte) pairs; `flags` other than 0b0010 is malformed."""
    body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([qos]) for f, qos in filters)
    return packet(0x80 | flags, body)


def unsubscribe_filters(filters: list[str | bytes], packet_id: int = 1, *, flags: int = 0b0010) -> bytes:
    return packet(0xA0 | flags, struct.pack("!H", packet_id) + b"".join(_string(f) for f in filters))


def ack(packet_type: int, packet_id: int, *, flags: int | None = None) -> bytes:
    """PUBACK (4), PUBREC (5), PUBREL (6) or PUBCOMP (7) for `packet_id`, with the flags the standard
    gives it (0b0010 for PUBREL, else 0) unless `flags` says otherwise."""
    if flags is None:
        flags = 0b0010 if packet_type == 6 else 0
    return packet(packet_type << 4 | flags, struct.pack("!H", packet_id))
