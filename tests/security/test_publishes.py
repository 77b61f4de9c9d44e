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
    on_nats,
    opened,
    publish_as_service,
    receives,
    watcher,
)
from tests.support import Subscriber

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
    """Both engines drop it silently: a QoS 1 PUBLISH is still PUBACKed (MQTT 3.1.1 has no negative
    acknowledgement), the connection stays, and no legitimate watcher gets it. The embedded broker counts
    and logs it; NATS logs it in the node's log only."""
    (client_id, role, claims), topic = case
    topic = broker.topic(topic)
    watch = watching(broker, topic)
    attacker = connected(broker, client_id, role, **claims)
    payload = f"forged {next(_payloads)}".encode()
    before = count(ACL_DENIALS, action="publish", role=role)
    attacker.sendall(raw.publish(topic, payload, qos=qos, packet_id=9))
    if qos:  # acknowledged before (amqtt) or despite (NATS) the refusal: the refusal is silent [MQTT-4.3.2-2]
        assert raw.read_packet(attacker) == (PUBACK, b"\x00\x09")
    if not on_nats(broker):
        assert_counted(ACL_DENIALS, before, action="publish", role=role)
        assert_logged(caplog, f"acl denied client_id={client_id!r} action=publish topic={topic!r}")
    never_delivered(watch, payload)
    attacker.sendall(raw.PINGREQ)  # dropped, not disconnected
    assert raw.read_packet(attacker) == (PINGRESP, b"")
    watch.close()
    assert_still_serves(broker)


# (who, topic it publishes retained, whether its token may publish there at all: on NATS, where retain is no
# permission, those are the retained publishes that get through)
RETAINED = [
    (SCALE, "restaurant/7/devices/scale-1/readings", True),  # its own topic, but retained
    (PRINTER, "restaurant/7/devices/printer-1/events", True),
    (SCALE, "restaurant/7/inventory/items/3", False),  # the bus's retained stock state
    (TABLET, "restaurant/7/orders/open/311", False),  # overwrite or clear an open order
    (DASHBOARD, "restaurant/7/orders/open/311", False),
]


def on_topic(sub: Subscriber, topic: str, quiet: float = 0.5) -> list[bytes]:
    """The payloads `sub` got on `topic` until quiet (a NATS watcher also gets earlier tests' retained messages)."""
    return [bytes(m.payload) for m in sub.drain(quiet=quiet) if m.topic == topic]


@pytest.mark.parametrize("clear", [False, True], ids=["overwrite", "clear"])
@pytest.mark.parametrize("case", RETAINED, ids=[_id(c[:2]) for c in RETAINED])
def test_a_device_publishing_retained_is_dropped_and_the_retained_state_stands(broker, caplog, case, clear):
    """Embedded: only `retain` patterns may publish retained, so every case is dropped, counted, and the bus's
    retained state stands. NATS cannot gate retain (docs/security.md): where the token may publish the topic
    at all (a device's own `events`/`readings`) the retained publish is kept, and a later subscriber gets it
    (or nothing, after a clear); on every other topic the publish is refused and the bus's state stands."""
    (client_id, role, claims), topic, may_publish = case
    topic = broker.topic(topic)
    if on_nats(broker):
        # the watcher first, the state then arrives live: twice in ~130 runs a NATS subscription made right after
        # the retained PUBACK got no retained message at all (none of the cluster's) within 10 s; the later
        # subscriber below still checks the retained copy at subscribe
        watch = watching(broker, topic)
        publish_as_service(broker, topic, b"the bus's state", retain=True)
        receives(watch, b"the bus's state", topic)
    else:
        publish_as_service(broker, topic, b"the bus's state", retain=True)
        watch = watching(broker, topic)
        assert receives(watch, b"the bus's state", topic).retain  # the retained copy, at subscribe
    attacker = connected(broker, client_id, role, **claims)
    payload = b"" if clear else f"forged {next(_payloads)}".encode()  # an empty retained payload clears the topic
    before = count(ACL_DENIALS, action="retain", role=role)
    attacker.sendall(raw.publish(topic, payload, qos=1, retain=True))
    assert raw.expect_packet(attacker)[0] == PUBACK
    if on_nats(broker) and may_publish:  # the gap: kept
        if not clear:
            receives(watch, payload, topic)
        watch.close()
        late = watching(broker, topic)
        assert on_topic(late, topic) == ([] if clear else [payload])
        late.close()
        return
    if not on_nats(broker):
        assert_counted(ACL_DENIALS, before, action="retain", role=role)
        assert_logged(caplog, f"acl denied retained publish client_id={client_id!r} topic={topic!r}")
    never_delivered(watch, payload, topic=topic)
    watch.close()
    late = watching(broker, topic)  # a screen that connects later
    assert on_topic(late, topic) == [b"the bus's state"]
    late.close()
    assert_still_serves(broker)


def test_a_device_may_publish_its_own_presence_retained(broker):
    """The one retained topic a device owns still works (the refusals above are not blanket)."""
    topic = broker.topic("restaurant/7/devices/scale-1/status")
    watch = watching(broker, topic)
    scale = connected(broker, "scale-1", "scale")
    scale.sendall(raw.publish(topic, b'{"state":"online"}', retain=True))
    receives(watch, b'{"state":"online"}', topic)
    late = watcher(broker, "restaurant/7/devices/+/status")
    [again] = late.collect(1)
    assert again.retain and again.payload == b'{"state":"online"}'
    watch.close()
    late.close()


@pytest.mark.parametrize(
    ("who", "will_topic", "retain", "may_publish"),
    [
        (SCALE, "restaurant/7/devices/scale-2/status", True, False),  # "lost" for another device
        (SCALE, "restaurant/7/devices/scale-1/readings", True, True),  # its own topic, retained
        (PRINTER, "restaurant/7/orders", False, False),
        (DASHBOARD, "restaurant/7/orders", False, False),
    ],
)
def test_a_last_will_the_token_may_not_publish_is_refused_at_connect(
    broker, caplog, who, will_topic, retain, may_publish
):
    """Embedded: the CONNECT is refused (CONNACK 5, `will_not_allowed`) [MQTT-3.1.2-8: a Will is published
    when the connection ends abnormally, so it is judged up front]. NATS does not show the Will to the callout:
    the connection is admitted and the Will is judged as a publish when it fires: dropped where the token may
    not publish, published (retained, retain being no permission there) on the device's own `readings`."""
    client_id, role, claims = who
    will_topic = broker.topic(will_topic)
    watch = watcher(broker, "restaurant/#", role="super_admin")
    before = count(AUTH_FAILURES, reason="will_not_allowed")
    sock = opened(broker, raw.open_socket(broker.port))
    forged = f"forged will {next(_payloads)}".encode()  # retained on NATS in one case: unique per test
    will = (will_topic, forged, retain)
    sock.sendall(raw.connect(client_id, broker.token(client_id, role, **claims), will=will))
    if on_nats(broker):
        assert raw.connack_code(sock) == ACCEPTED
    else:
        assert raw.connack_code(sock) == NOT_AUTHORIZED
        assert_counted(AUTH_FAILURES, before, reason="will_not_allowed")
        assert_logged(caplog, f"connect refused client_id={client_id!r} reason=will_not_allowed")
    sock.close()  # an abrupt close: an accepted connection's Will fires
    if on_nats(broker) and may_publish:
        receives(watch, forged, will_topic)
    else:
        never_delivered(watch, forged)
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
