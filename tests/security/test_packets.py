"""Packets a client may not send at all, or not with these bytes, or not now (MQTT 3.1.1): each closes its
own connection or is ignored exactly as the standard says, is counted by reason and logged once, and
never disturbs anyone else: a session connected before it still receives afterwards, and a fresh
client connects, subscribes and receives. Each case cites the normative statement it checks.

`Framing` (broker/guard.py) makes the close decisions from the byte stream, whichever reader loop
carries it; whether an acknowledgement's packet id is in flight is the session's to know."""

from __future__ import annotations

import socket
import struct

import pytest

from broker.stats import DISCONNECTS, IGNORED
from core import topics
from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    PINGRESP,
    assert_counted,
    assert_logged,
    assert_still_serves,
    broker_log,
    connected,
    count,
    logged,
    never_delivered,
    publish_as_service,
    watcher,
)
from tests.support import Subscriber

PUBACK, PUBREC, PUBREL, PUBCOMP = 4, 5, 6, 7
ORDERS = topics.orders(7)
FILTER = topics.everything(7)
FILTER_FIELD = struct.pack("!H", len(FILTER)) + FILTER.encode()

# (reason counted, the packet, the normative statement)
CLOSES: list[tuple[str, bytes, str]] = [
    # a packet id of 0 where one is required
    ("bad_packet_id", raw.publish(ORDERS, b"forged", qos=1, packet_id=0), "MQTT-2.3.1-1"),
    ("bad_packet_id", raw.publish(ORDERS, b"forged", qos=2, packet_id=0), "MQTT-2.3.1-1"),
    ("bad_packet_id", raw.subscribe(FILTER, packet_id=0), "MQTT-2.3.1-1"),
    ("bad_packet_id", raw.unsubscribe_filters([FILTER], packet_id=0), "MQTT-2.3.1-1"),
    # the SUBSCRIBE's requested QoS byte: QoS 3, or a reserved bit set (amqtt answered SUBACK 3, then 0x80)
    ("bad_qos", raw.subscribe(FILTER, qos=3), "MQTT-3.8.3-4"),
    ("bad_qos", raw.subscribe(FILTER, qos=0x81), "MQTT-3.8.3-4"),
    ("bad_qos", raw.subscribe(FILTER, qos=0x40), "MQTT-3.8.3-4"),
    ("bad_qos", raw.subscribe_filters([(FILTER, 1), (ORDERS, 3)]), "MQTT-3.8.3-4"),  # one bad pair spoils all
    # fixed-header flags
    ("bad_flags", raw.subscribe_filters([(FILTER, 1)], flags=0), "MQTT-3.8.1-1"),
    ("bad_flags", raw.subscribe_filters([(FILTER, 1)], flags=0b0011), "MQTT-3.8.1-1"),
    ("bad_flags", raw.unsubscribe_filters([FILTER], flags=0), "MQTT-3.10.1-1"),
    ("bad_flags", raw.ack(PUBREL, 1, flags=0), "MQTT-3.6.1-1"),
    ("bad_flags", raw.ack(PUBACK, 1, flags=0b0010), "MQTT-2.2.2-2"),
    ("bad_flags", bytes([0xC8, 0x00]), "MQTT-2.2.2-2"),  # PINGREQ
    ("bad_flags", bytes([0xE1, 0x00]), "MQTT-3.14.1-1"),  # DISCONNECT
    # no topic filter at all
    ("no_topic_filter", raw.packet(0x82, struct.pack("!H", 1)), "MQTT-3.8.3-3"),
    ("no_topic_filter", raw.packet(0xA2, struct.pack("!H", 1)), "MQTT-3.10.3-2"),
    # a filter that is not a valid MQTT string (amqtt turned bad UTF-8 into "b'...'" and answered 0x80)
    ("bad_topic_filter", raw.subscribe(FILTER.encode()[:-1] + b"\x00"), "MQTT-1.5.3-2"),
    ("bad_topic_filter", raw.subscribe(FILTER.encode()[:-1] + b"\xff\xfe"), "MQTT-1.5.3-1"),
    ("bad_topic_filter", raw.subscribe(FILTER.encode()[:-1] + b"\xed\xa0\x80"), "MQTT-1.5.3-1"),  # U+D800
    ("bad_topic_filter", raw.subscribe_filters([(FILTER.encode() + b"\xc3", 1), (FILTER, 1)]), "MQTT-1.5.3-1"),
    ("bad_topic_filter", raw.unsubscribe_filters([FILTER.encode() + b"\x00"]), "MQTT-1.5.3-2"),
    ("bad_topic_filter", raw.unsubscribe_filters([FILTER.encode() + b"\xc3"]), "MQTT-1.5.3-1"),
    # server-to-client packets (MQTT 3.1.1 §2.2.1, Table 2.1: direction Server to Client)
    ("unexpected_packet", bytes([0x20, 0x02, 0x00, 0x00]), "MQTT-4.8.0-1"),  # CONNACK
    ("unexpected_packet", raw.packet(0x90, struct.pack("!H", 1) + b"\x01"), "MQTT-4.8.0-1"),  # SUBACK
    ("unexpected_packet", raw.packet(0xB0, struct.pack("!H", 1)), "MQTT-4.8.0-1"),  # UNSUBACK
    ("unexpected_packet", bytes([0xD0, 0x00]), "MQTT-4.8.0-1"),  # PINGRESP
    # lengths the standard fixes, and fields that do not fill the packet
    ("bad_remaining_length", raw.packet(0x40, b"\x00\x01\x00"), "MQTT-4.8.0-1"),  # PUBACK: 2 bytes [§3.4.1]
    ("bad_remaining_length", raw.packet(0x62, b"\x00"), "MQTT-4.8.0-1"),  # PUBREL: 2 bytes [§3.6.1]
    ("bad_remaining_length", raw.packet(0xC0, b"\x00"), "MQTT-4.8.0-1"),  # PINGREQ: none [§3.12.1]
    ("bad_remaining_length", raw.packet(0x82, struct.pack("!H", 1) + FILTER_FIELD), "MQTT-4.8.0-1"),  # no QoS
]


def _closed_without_answer(sock: socket.socket) -> bool:
    try:
        return raw.read_packet(sock) is None
    except ConnectionResetError:
        return True


def _still_receives(broker, sub: Subscriber, label: str) -> None:
    """A session connected before the violation gets a message published after it."""
    payload = f"after {label}".encode()
    publish_as_service(broker, ORDERS, payload)
    assert payload in [m.payload for m in sub.collect(1)], f"the watcher missed the message after {label}"


@pytest.mark.parametrize(
    ("reason", "packet", "statement"), CLOSES, ids=[f"{r}-{s}-{i}" for i, (r, _, s) in enumerate(CLOSES)]
)
def test_a_packet_that_breaks_the_standard_closes_only_its_own_connection(broker, caplog, reason, packet, statement):
    watch = watcher(broker, FILTER, role="super_admin")
    sock = connected(broker, "dash")
    before = count(DISCONNECTS, reason=reason)
    sock.sendall(packet + raw.PINGREQ)  # the PINGREQ after it must not be answered
    assert _closed_without_answer(sock), f"{statement}: the connection stayed open"
    assert_counted(DISCONNECTS, before, reason=reason)
    line = f"disconnect client_id='dash' reason={reason}"
    assert_logged(caplog, line)
    never_delivered(watch, b"forged")
    _still_receives(broker, watch, reason)
    assert logged(caplog, line) == 1, f"{line!r} logged more than once"
    watch.close()
    assert_still_serves(broker)


def test_a_filter_refused_by_the_acl_is_still_answered_0x80_and_the_connection_stays(broker):
    """The close cases above are malformed packets. A well-formed filter beyond the token is the
    standard's SUBACK failure code [MQTT-3.9.3-2] ("0x80 Failure"), not a reason to close (more in
    test_subscriptions.py)."""
    sock = connected(broker, "dash")
    sock.sendall(raw.subscribe_filters([(topics.everything(8), 1), (FILTER, 1)], packet_id=9))
    assert raw.expect_packet(sock) == (9, struct.pack("!H", 9) + bytes([0x80, 1]))
    sock.sendall(raw.PINGREQ)
    assert raw.expect_packet(sock) == (PINGRESP, b"")


# --- acknowledgements for a packet id that is not in flight ------------------------------------


@pytest.mark.parametrize("kind", [PUBACK, PUBREC, PUBCOMP], ids=["puback", "pubrec", "pubcomp"])
def test_an_acknowledgement_for_a_packet_id_not_in_flight_is_ignored_and_counted(broker, caplog, kind):
    """Nothing was sent with id 4242, so there is nothing to acknowledge: a late or duplicate ack (the
    client resent it after a reconnect) is not a violation of its own [MQTT-4.3.2-1, MQTT-4.3.3-1 say
    what the sender does with the ack of its own message]; the broker ignores it and counts it."""
    watch = watcher(broker, FILTER, role="super_admin")
    sock = connected(broker, "dash")
    before = count(IGNORED, reason="unknown_packet_id")
    sock.sendall(raw.ack(kind, 4242) + raw.PINGREQ)
    assert raw.expect_packet(sock) == (PINGRESP, b""), "the connection was not kept"
    assert_counted(IGNORED, before, reason="unknown_packet_id")
    assert_logged(caplog, "client_id='dash'", "reason=unknown_packet_id")
    assert logged(caplog, "client_id='dash'", "reason=unknown_packet_id") == 1
    _still_receives(broker, watch, f"ack {kind}")
    watch.close()
    assert_still_serves(broker)


def test_a_pubrel_for_a_packet_id_not_in_flight_is_still_answered_pubcomp(broker, caplog):
    """[MQTT-4.3.3-2]: the receiver MUST respond to a PUBREL with a PUBCOMP of the same packet id. A
    PUBREL for an id the broker no longer holds is the client resending it after a lost PUBCOMP
    (it must, on reconnect [MQTT-4.4.0-1]); ignoring it would leave the client's QoS 2 flow open for
    ever. Nothing is released (no message), and it is counted as an unknown packet id."""
    watch = watcher(broker, FILTER, role="super_admin")
    sock = connected(broker, "dash")
    before = count(IGNORED, reason="unknown_packet_id")
    sock.sendall(raw.ack(PUBREL, 4242) + raw.PINGREQ)
    assert raw.expect_packet(sock) == (PUBCOMP, struct.pack("!H", 4242))
    assert raw.expect_packet(sock) == (PINGRESP, b"")
    assert_counted(IGNORED, before, reason="unknown_packet_id")
    assert_logged(caplog, "client_id='dash'", "reason=unknown_packet_id")
    assert logged(caplog, "client_id='dash'", "reason=unknown_packet_id") == 1
    _still_receives(broker, watch, "pubrel")
    watch.close()
    assert_still_serves(broker)


def test_a_second_puback_for_the_same_message_is_ignored_and_counted(broker):
    """The first PUBACK ends the QoS 1 delivery [MQTT-4.3.2-1] and is not counted; the same one again
    refers to nothing in flight any more."""
    sock = connected(broker, "dash")
    sock.sendall(raw.subscribe(FILTER, qos=1))
    assert raw.expect_packet(sock)[0] == 9
    publish_as_service(broker, ORDERS, b"ticket")
    kind, body = raw.expect_packet(sock)
    assert kind == 3
    (packet_id,) = struct.unpack("!H", body[2 + len(ORDERS) : 4 + len(ORDERS)])
    before = count(IGNORED, reason="unknown_packet_id")
    sock.sendall(raw.ack(PUBACK, packet_id) + raw.PINGREQ)
    assert raw.expect_packet(sock) == (PINGRESP, b"")
    assert count(IGNORED, reason="unknown_packet_id") == before, "the PUBACK of a message in flight was counted"
    sock.sendall(raw.ack(PUBACK, packet_id) + raw.PINGREQ)
    assert raw.expect_packet(sock) == (PINGRESP, b"")
    assert_counted(IGNORED, before, reason="unknown_packet_id")
