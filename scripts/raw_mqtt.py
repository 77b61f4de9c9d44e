"""Hand-built MQTT 3.1.1 packets over plain sockets: for what a well-behaved client library refuses to
send (the security tests), and for thousands of connections that cost no client library (the broker
benchmark)."""

from __future__ import annotations

import socket
import struct


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
    header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return packet(0x10, header + payload)


def subscribe(topic_filter: str | bytes, packet_id: int = 1, qos: int = 1) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos]))


def publish(topic: str | bytes, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 1) -> bytes:
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(first, body)


PINGREQ = bytes([0xC0, 0x00])
DISCONNECT = bytes([0xE0, 0x00])


def open_socket(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """(packet type, body) or None when the broker closed the connection."""
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
    return first[0] >> 4, body


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
