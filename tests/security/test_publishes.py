"""Publishes a token may not make: to another role's or device's topics, retained, as a Last Will,
or too large. Each is dropped (or the connection closed), counted, logged, never delivered to a
legitimate watcher, and the broker keeps serving."""

from __future__ import annotations

import itertools
import struct

import pytest

from broker.stats import ACL_DENIALS, AUTH_FAILURES, DROPPED
from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    ACCEPTED,
    DASHBOARD,
    NOT_AUTHORIZED,
    OPS,
    PINGRESP,
    PRINTER,
    PUBACK,
    SCALE,
    STAFF,
    TABLET,
    assert_counted,
    assert_logged,
    assert_still_serves,
    broker_log,
    connected,
    count,
    never_delivered,
    publish_as_service,
    watcher,
)

_payloads = itertools.count()


def watching(broker, topic: str):
    """A legitimate watcher of `topic`: the bus (service token) for what devices publish, a super_admin
    dashboard for the rest (the service role may not subscribe to bus topics)."""
    kind = topic.rsplit("/", 1)[-1]
    if "/devices/" in topic and kind in ("status", "events", "readings"):
        return watcher(broker, f"restaurant/+/devices/+/{kind}", role="service")
    return watcher(broker, "restaurant/#", role="super_admin")


# (who, topic)
FORBIDDEN = [
    (DASHBOARD, "restaurant/7/orders"),  # a dashboard publishing orders
    (STAFF, "restaurant/7/orders/open/1"),
    (DASHBOARD, "restaurant/7/devices/printer-1/commands"),
    (SCALE, "restaurant/7/devices/scale-2/readings"),  # another scale's readings
    (SCALE, "restaurant/8/devices/scale-1/readings"),  # its own id, another restaurant
    (SCALE, "restaurant/7/inventory/items/3"),  # forging stock state
    (PRINTER, "restaurant/7/devices/printer-2/events"),  # "printed" for another printer
    (PRINTER, "restaurant/7/devices/printer-1/commands"),
    (TABLET, "restaurant/7/kitchen/grill/tickets"),
    (TABLET, "restaurant/7/devices/printer-1/status"),  # another device's presence
    (OPS, "restaurant/7/orders"),
]


def _id(case) -> str:
    (_, role, _), topic = case
    return f"{role}->{topic}"


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("case", FORBIDDEN, ids=[_id(c) for c in FORBIDDEN])
def test_a_publish_outside_the_role_is_dropped(broker, caplog, case, qos):
    (client_id, role, claims), topic = case
    watch = watching(broker, topic)
    attacker = connected(broker, client_id, role, **claims)
    payload = f"forged {next(_payloads)}".encode()
    before = count(ACL_DENIALS, action="publish", role=role)
    attacker.sendall(raw.publish(topic, payload, qos=qos, packet_id=9))
    if qos:  # amqtt acknowledges a QoS 1 PUBLISH before the ACL drops it: the refusal is silent
        assert raw.read_packet(attacker) == (PUBACK, b"\x00\x09")
    assert_counted(ACL_DENIALS, before, action="publish", role=role)
    assert_logged(caplog, f"acl denied client_id={client_id!r} action=publish topic={topic!r}")
    never_delivered(watch, payload)
    attacker.sendall(raw.PINGREQ)  # dropped, not disconnected
    assert raw.read_packet(attacker) == (PINGRESP, b"")
    watch.close()
    assert_still_serves(broker)


# (who, topic it publishes retained)
RETAINED = [
    (SCALE, "restaurant/7/devices/scale-1/readings"),  # its own topic, but retained
    (PRINTER, "restaurant/7/devices/printer-1/events"),
    (SCALE, "restaurant/7/inventory/items/3"),  # the bus's retained stock state
    (TABLET, "restaurant/7/orders/open/311"),  # overwrite or clear an open order
    (DASHBOARD, "restaurant/7/orders/open/311"),
]


@pytest.mark.parametrize("clear", [False, True], ids=["overwrite", "clear"])
@pytest.mark.parametrize("case", RETAINED, ids=[_id(c) for c in RETAINED])
def test_a_device_publishing_retained_is_dropped_and_the_retained_state_stands(broker, caplog, case, clear):
    (client_id, role, claims), topic = case
    publish_as_service(broker, topic, b"the bus's state", retain=True)
    watch = watching(broker, topic)
    assert [m.payload for m in watch.collect(1)] == [b"the bus's state"]  # the retained copy, at subscribe
    attacker = connected(broker, client_id, role, **claims)
    payload = b"" if clear else f"forged {next(_payloads)}".encode()  # an empty retained payload clears the topic
    before = count(ACL_DENIALS, action="retain", role=role)
    attacker.sendall(raw.publish(topic, payload, qos=1, retain=True))
    assert raw.expect_packet(attacker)[0] == PUBACK
    assert_counted(ACL_DENIALS, before, action="retain", role=role)
    assert_logged(caplog, f"acl denied retained publish client_id={client_id!r} topic={topic!r}")
    never_delivered(watch, payload)
    watch.close()
    late = watching(broker, topic)  # a screen that connects later
    assert [m.payload for m in late.collect(1)] == [b"the bus's state"]
    never_delivered(late, payload)
    late.close()
    assert_still_serves(broker)


def test_a_device_may_publish_its_own_presence_retained(broker):
    """The one retained topic a device owns still works (the refusals above are not blanket)."""
    watch = watching(broker, "restaurant/7/devices/scale-1/status")
    scale = connected(broker, "scale-1", "scale")
    scale.sendall(raw.publish("restaurant/7/devices/scale-1/status", b'{"state":"online"}', retain=True))
    assert [m.payload for m in watch.collect(1)] == [b'{"state":"online"}']
    late = watcher(broker, "restaurant/7/devices/+/status")
    [again] = late.collect(1)
    assert again.retain and again.payload == b'{"state":"online"}'
    watch.close()
    late.close()


@pytest.mark.parametrize(
    ("who", "will_topic", "retain"),
    [
        (SCALE, "restaurant/7/devices/scale-2/status", True),  # "lost" for another device
        (SCALE, "restaurant/7/devices/scale-1/readings", True),  # its own topic, retained
        (PRINTER, "restaurant/7/orders", False),
        (DASHBOARD, "restaurant/7/orders", False),
    ],
)
def test_a_last_will_the_token_may_not_publish_is_refused_at_connect(broker, caplog, who, will_topic, retain):
    client_id, role, claims = who
    watch = watcher(broker, "restaurant/#", role="super_admin")
    before = count(AUTH_FAILURES, reason="will_not_allowed")
    sock = raw.open_socket(broker.port)
    will = (will_topic, b"forged will", retain)
    sock.sendall(raw.connect(client_id, broker.token(client_id, role, **claims), will=will))
    assert raw.connack_code(sock) == NOT_AUTHORIZED
    assert_counted(AUTH_FAILURES, before, reason="will_not_allowed")
    assert_logged(caplog, f"connect refused client_id={client_id!r} reason=will_not_allowed")
    sock.close()  # had it been accepted, this abrupt close would fire the Will
    never_delivered(watch, b"forged will")
    watch.close()
    assert_still_serves(broker)


def _subscribe_with_many_filters(size: int) -> bytes:
    one = struct.pack("!H", 19) + b"restaurant/7/orders" + b"\x00"
    return raw.packet(0x82, struct.pack("!H", 1) + one * (size // len(one) + 1))


@pytest.mark.parametrize(
    ("who", "packet"),
    [
        (SCALE, raw.publish("restaurant/7/devices/scale-1/readings", b"w" * 10_000)),
        (("relay", "service", {"rid": None}), raw.publish("restaurant/7/orders", b"o" * 5_000, qos=1)),
        (DASHBOARD, _subscribe_with_many_filters(10_000)),  # each field is small; the packet is not
    ],
    ids=["device-publish", "service-publish", "subscribe-of-small-filters"],
)
def test_an_oversized_packet_closes_the_connection(make_broker, caplog, who, packet):
    broker = make_broker(max_packet_bytes=4096)
    client_id, role, claims = who
    watch = watcher(broker, "restaurant/#", role="super_admin")
    device_watch = watching(broker, "restaurant/7/devices/scale-1/readings")
    sock = connected(broker, client_id, role, **claims)
    before = count(DROPPED, cause="size")
    sock.sendall(packet)
    assert raw.closed_by_peer(sock, within=3.0)
    assert_counted(DROPPED, before, cause="size")
    assert_logged(caplog, f"disconnect client_id={client_id!r} reason=packet_too_large")
    assert never_delivered(watch, b"") == [] and never_delivered(device_watch, b"") == []
    watch.close()
    device_watch.close()
    assert_still_serves(broker)
