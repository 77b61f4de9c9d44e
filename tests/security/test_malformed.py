"""Packets that are not MQTT 3.1.1: the connection is refused or closed, counted by reason, logged,
and the broker keeps serving everyone else. Ends with random bytes after a valid CONNECT."""

from __future__ import annotations

import itertools
import logging
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from broker.stats import AUTH_FAILURES, DISCONNECTS, DROPPED, REFUSED_CONNECTIONS
from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    NOT_AUTHORIZED,
    PINGRESP,
    assert_counted,
    assert_logged,
    assert_still_serves,
    broker_log,
    connected,
    count,
    never_delivered,
    watcher,
)

FIVE_LENGTH_BYTES = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x7F])  # a remaining length may take at most 4 bytes
_ids = itertools.count()


def _connect_with(
    client_id: bytes, password: bytes, *, username: bytes = b"x", will_topic: bytes | None = None
) -> bytes:
    """A CONNECT whose strings are raw bytes (raw.connect encodes text, so it cannot send bad UTF-8)."""

    def field(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    flags = 0x02 | 0x80 | 0x40
    payload = field(client_id)
    if will_topic is not None:
        flags |= 0x04 | 0x20
        payload += field(will_topic) + field(b"lost")
    payload += field(username) + field(password)
    return raw.packet(0x10, field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + payload)


# --- before a session exists: refused as bad_connect -------------------------------------------


FIRST_PACKETS = [
    ("connect-5-length-bytes", bytes([0x10]) + FIVE_LENGTH_BYTES),  # a CONNECT whose remaining length never ends
    ("reserved-0", bytes([0x00, 0x00])),  # reserved type 0 instead of CONNECT
    ("reserved-15", bytes([0xF0, 0x00])),  # reserved type 15
    ("publish-first", raw.publish("restaurant/7/orders", b"hello")),  # anything but CONNECT first
    ("field-past-end", raw.packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x1e\x00\x10short")),  # id longer than the packet
    ("reserved-flag", raw.packet(0x10, b"\x00\x04MQTT\x04\x03\x00\x1e\x00\x01a")),  # reserved CONNECT flag set
    ("mqtt-3.1", raw.packet(0x10, b"\x00\x06MQIsdp\x03\x02\x00\x1e\x00\x01a")),  # MQTT 3.1's protocol name
    ("connect-flags", raw.packet(0x12, b"\x00\x04MQTT\x04\x02\x00\x1e\x00\x01a")),  # flags set [MQTT-2.2.2-2]
]


@pytest.mark.parametrize("first_packet", [p for _, p in FIRST_PACKETS], ids=[name for name, _ in FIRST_PACKETS])
def test_a_first_packet_that_is_not_a_valid_connect_is_refused(broker, caplog, first_packet):
    before = count(REFUSED_CONNECTIONS, reason="bad_connect")
    sock = raw.open_socket(broker.port)
    sock.sendall(first_packet)
    assert raw.closed_by_peer(sock, within=3.0)
    assert_counted(REFUSED_CONNECTIONS, before, reason="bad_connect")
    assert_logged(caplog, "connect refused from 127.0.0.1", "reason=bad_connect")
    assert_still_serves(broker)


@pytest.mark.parametrize("level", [3, 5])
def test_another_protocol_level_gets_connack_1(broker, caplog, level):
    """MQTT 3.1.1 only: a 3.1 or 5.0 client is told so (CONNACK 1, unacceptable protocol version)."""
    packet = bytearray(raw.connect("dash", broker.token("dash", "admin")))
    packet[packet.index(b"MQTT") + 4] = level
    before = count(REFUSED_CONNECTIONS, reason="bad_connect")
    sock = raw.open_socket(broker.port)
    sock.sendall(bytes(packet))
    assert raw.connack_code(sock) == 1
    assert_counted(REFUSED_CONNECTIONS, before, reason="bad_connect")
    assert_logged(caplog, "reason=bad_connect")
    assert_still_serves(broker)


@pytest.mark.parametrize(
    ("client_id", "password", "will_topic", "reason"),
    [
        (b"dash\xff", None, None, "client_id_mismatch"),  # the token is dash's; the id is not valid UTF-8
        (b"dash", b"\xff\xfe" + b"x" * 20, None, "malformed"),  # a password (token) that is not UTF-8
        (b"scale-1", None, b"restaurant/7/devices/scale-1/status\xc3", "will_not_allowed"),  # a Will topic
    ],
    ids=["client-id", "password", "will-topic"],
)
def test_a_connect_with_invalid_utf8_is_refused(broker, caplog, client_id, password, will_topic, reason):
    """amqtt decodes bad UTF-8 into its Python repr ("b'dash\\xff'") instead of closing; that string matches
    no token subject and no ACL pattern, so the CONNECT is refused with CONNACK 5."""
    sub = client_id.decode("utf-8", "ignore")
    role = "scale" if sub.startswith("scale") else "admin"
    token = password if password is not None else broker.token(sub, role).encode()
    before = count(AUTH_FAILURES, reason=reason)
    sock = raw.open_socket(broker.port)
    sock.sendall(_connect_with(client_id, token, will_topic=will_topic))
    assert raw.connack_code(sock) == NOT_AUTHORIZED
    assert_counted(AUTH_FAILURES, before, reason=reason)
    assert_logged(caplog, "connect refused", f"reason={reason}")
    assert_still_serves(broker)


# --- after CONNECT: the connection is closed, counted as a forced disconnect ---------------------

AFTER_CONNECT = [
    ("bad_remaining_length", bytes([0x30]) + FIVE_LENGTH_BYTES),
    ("bad_remaining_length", raw.packet(0x32, b"\x00\x13restaurant/7/orders")),  # QoS 1, no room for its packet id
    ("reserved_packet_type", bytes([0x00, 0x00])),
    ("reserved_packet_type", bytes([0xF0, 0x00])),
    ("second_connect", None),  # filled in with a valid CONNECT below
    ("bad_qos", raw.packet(0x36, b"\x00\x13restaurant/7/orders\x00\x01forged")),  # QoS 3
    ("bad_topic", raw.publish("restaurant/7/#", b"forged")),
    ("bad_topic", raw.publish("restaurant/+/orders", b"forged")),
    ("bad_topic", raw.publish(b"", b"forged")),
    ("bad_topic", raw.publish("restaurant/7/orders\x00x", b"forged")),
    ("bad_topic", raw.publish(b"restaurant/7/orders\xff", b"forged")),
    ("bad_topic", raw.publish("$SYS/broker/clients", b"forged")),
]


@pytest.mark.parametrize(
    ("reason", "packet"),
    AFTER_CONNECT,
    ids=[f"{reason}-{i}" for i, (reason, _) in enumerate(AFTER_CONNECT)],
)
def test_a_malformed_packet_after_connect_closes_the_connection(broker, caplog, reason, packet):
    """The sender is the bus itself (a service token may publish anywhere under restaurant/), so nothing
    here is stopped by the ACL: only the framing check. A watcher sees none of it."""
    watch = watcher(broker, "restaurant/#", role="super_admin")
    sock = connected(broker, "relay", "service", rid=None)
    if packet is None:
        packet = raw.connect("relay", broker.token("relay", "super_admin", rid=None))  # and a bigger role
    before = count(DISCONNECTS, reason=reason)
    sock.sendall(packet + raw.PINGREQ)  # a PINGREQ after it must not be answered
    assert raw.read_packet(sock) is None  # closed, no PINGRESP
    assert_counted(DISCONNECTS, before, reason=reason)
    assert_logged(caplog, f"disconnect client_id='relay' reason={reason}")
    never_delivered(watch, b"forged")
    watch.close()
    assert_still_serves(broker)


def test_a_protocol_violation_is_an_abnormal_disconnect_and_the_will_fires(broker):
    """A device that sends garbage is treated like one that vanished: its own Last Will says `lost`."""
    watch = watcher(broker, "restaurant/+/devices/+/status")
    device = raw.open_socket(broker.port)
    will = ("restaurant/7/devices/kds-1/status", b'{"state":"lost"}', True)
    device.sendall(raw.connect("kds-1", broker.token("kds-1", "tablet"), will=will))
    assert raw.connack_code(device) == 0
    device.sendall(bytes([0xF0, 0x00]))
    assert raw.closed_by_peer(device, within=3.0)
    assert [m.payload for m in watch.collect(1)] == [b'{"state":"lost"}']
    watch.close()


def test_a_packet_split_into_single_bytes_is_still_fine(broker):
    """The framing check follows packets across reads, however the bytes arrive."""
    sock = raw.open_socket(broker.port)
    connect = raw.connect("dash", broker.token("dash", "admin"))
    subscribe = raw.subscribe("restaurant/7/orders")
    for byte in connect + subscribe + raw.PINGREQ:
        sock.sendall(bytes([byte]))
    assert raw.connack_code(sock) == 0
    # amqtt answers PINGREQ in its reader and SUBSCRIBE in the broker loop: either may come first
    assert {raw.read_packet(sock), raw.read_packet(sock)} == {(9, b"\x00\x01\x01"), (PINGRESP, b"")}


# --- the WebSocket listener ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "subprotocols", "status", "reason"),
    [
        ("/other", ["mqtt"], 404, "ws_path"),  # amqtt's listener ignored the path
        ("/", ["mqtt"], 404, "ws_path"),
        ("/mqtt", None, 400, "ws_subprotocol"),
        ("/mqtt", ["mqttv3.1"], 400, "ws_subprotocol"),
    ],
)
def test_a_websocket_handshake_off_path_or_without_the_mqtt_subprotocol_is_refused(
    broker, caplog, path, subprotocols, status, reason
):
    before = count(REFUSED_CONNECTIONS, reason=reason)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{broker.listeners.ws_port}{path}", subprotocols=subprotocols, open_timeout=5)
    assert refused.value.response.status_code == status
    assert_counted(REFUSED_CONNECTIONS, before, reason=reason)
    assert_logged(caplog, "websocket refused", f"reason={reason}")
    assert_still_serves(broker)


def test_over_websocket_the_same_checks_apply(make_broker, caplog):
    """Tokens, framing and size are checked on the byte stream, whichever listener carried it."""
    broker = make_broker(max_packet_bytes=4096)
    url = f"ws://127.0.0.1:{broker.listeners.ws_port}/mqtt"
    attempts: list[tuple[bytes, bytes | None, Any, dict[str, Any], str]] = [
        (raw.connect("dash", "not-a-jwt"), None, AUTH_FAILURES, {"reason": "malformed"}, "reason=malformed"),
        (
            raw.connect("dash", broker.token("dash", "admin")),
            bytes([0xF0, 0x00]),
            DISCONNECTS,
            {"reason": "reserved_packet_type"},
            "reason=reserved_packet_type",
        ),
        (
            raw.connect("dash", broker.token("dash", "admin")),
            raw.publish("restaurant/7/orders", b"x" * 5000),
            DROPPED,
            {"cause": "size"},
            "reason=packet_too_large",
        ),
    ]
    for connect, attack, counter, labels, fragment in attempts:
        before = count(counter, **labels)
        with ws_connect(url, subprotocols=[Subprotocol("mqtt")], open_timeout=5) as ws:
            ws.send(connect)
            connack = ws.recv(timeout=5)
            if attack is None:
                assert connack == bytes([0x20, 0x02, 0x00, NOT_AUTHORIZED])
            else:
                assert connack == bytes([0x20, 0x02, 0x00, 0x00])
                ws.send(attack)
            with pytest.raises(Exception):  # the broker ends the connection  # noqa: B017
                ws.recv(timeout=5)
        assert_counted(counter, before, **labels)
        assert_logged(caplog, fragment)
    assert_still_serves(broker)


# --- random bytes ------------------------------------------------------------------------------

_packets = st.builds(raw.packet, st.integers(0, 255), st.binary(max_size=80))
_junk = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.lists(_packets, min_size=1, max_size=6).map(b"".join),
    st.tuples(_packets, st.binary(min_size=1, max_size=40)).map(lambda parts: parts[0] + parts[1]),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(junk=_junk)
def test_random_bytes_after_a_valid_connect_never_break_the_broker(broker, caplog, junk):
    n = next(_ids)
    sock = connected(broker, f"fuzz-{n}")
    sock.sendall(junk)
    assert_still_serves(broker)  # while the junk connection is still open, if the broker kept it
    sock.close()
    assert broker._thread.is_alive()
    errors = [r for r in caplog.records if r.name == "orderbus.broker" and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
