"""Subscriptions that reach further than the token allows, and filters that are not filters:
SUBACK 0x80, counted, logged, nothing delivered, and the broker keeps serving."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from broker.stats import ACL_DENIALS, DISCONNECTS
from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    ACCEPTED,
    DASHBOARD,
    OPS,
    PRINTER,
    REFUSED,
    SCALE,
    SERVICE,
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
    publish_as_service,
    receives,
    suback_code,
    watch_qos,
    watcher,
)
from tests.support import Subscriber

# (who, filter, a topic the filter matches that this token may not read — published to prove nothing leaks)
OVERREACH: list[tuple[tuple[str, str, dict[str, Any]], str, str | None]] = [
    (DASHBOARD, "#", "restaurant/8/orders"),
    (DASHBOARD, "+/#", "restaurant/8/orders"),
    (DASHBOARD, "restaurant/+/orders", "restaurant/8/orders"),
    (DASHBOARD, "restaurant/#", "restaurant/8/orders"),
    (DASHBOARD, "restaurant/+/#", "restaurant/8/inventory"),
    (DASHBOARD, "+/+/orders", "restaurant/8/orders"),
    (DASHBOARD, "$SYS/#", None),
    (DASHBOARD, "restaurant/8/orders", "restaurant/8/orders"),
    (DASHBOARD, "restaurant/8/#", "restaurant/8/orders/open/1"),
    (STAFF, "restaurant/70/#", "restaurant/70/orders"),
    (PRINTER, "restaurant/7/orders", "restaurant/7/orders"),  # a tablet's topic
    (PRINTER, "restaurant/7/kitchen/+/tickets", "restaurant/7/kitchen/bar/tickets"),
    (PRINTER, "restaurant/7/kitchen/bar/tickets", "restaurant/7/kitchen/bar/tickets"),
    (PRINTER, "restaurant/7/kitchen/#", "restaurant/7/kitchen/bar/tickets"),
    (PRINTER, "restaurant/7/devices/kds-1/commands", "restaurant/7/devices/kds-1/commands"),
    (PRINTER, "restaurant/7/devices/+/commands", "restaurant/7/devices/kds-1/commands"),
    (PRINTER, "restaurant/7/orders/#", "restaurant/7/orders"),
    (PRINTER, "restaurant/7/#", "restaurant/7/inventory"),
    (PRINTER, "restaurant/8/kitchen/grill/tickets", "restaurant/8/kitchen/grill/tickets"),
    (TABLET, "restaurant/7/devices/printer-1/commands", "restaurant/7/devices/printer-1/commands"),
    (TABLET, "restaurant/7/devices/+/status", "restaurant/7/devices/printer-1/status"),
    (TABLET, "restaurant/7/inventory", "restaurant/7/inventory"),
    (SCALE, "restaurant/7/devices/+/readings", "restaurant/7/devices/scale-2/readings"),
    (SCALE, "restaurant/7/devices/scale-2/commands", "restaurant/7/devices/scale-2/commands"),
    (OPS, "restaurant/7/#", "restaurant/7/orders"),
    (OPS, "#", "restaurant/7/orders"),
    (SERVICE, "#", "restaurant/7/orders"),
    (SERVICE, "restaurant/+/orders", "restaurant/7/orders"),
]


def _id(case: tuple[tuple[str, str, dict[str, Any]], str, str | None]) -> str:
    (_, role, _), topic_filter, _ = case
    return f"{role}:{topic_filter}"


@pytest.mark.parametrize("case", OVERREACH, ids=[_id(c) for c in OVERREACH])
def test_a_filter_beyond_the_token_is_refused_and_leaks_nothing(broker, caplog, case):
    """Both engines: SUBACK 0x80, the failure code of §3.9.3 (every SUBSCRIBE is answered [MQTT-3.8.4-1]), the
    connection stays, and a message on a topic the filter would have matched reaches a super_admin control
    subscriber and not the attacker. Counted and logged by the embedded broker; NATS logs its own refusal in
    the node's log. On NATS the attacker asks QoS 0: had the filter been granted, it would deliver from the
    SUBACK on."""
    (client_id, role, claims), topic_filter, leak = case
    attacker = Subscriber(broker.port, client_id, broker.token(client_id, role, **claims))
    control = watcher(broker, "restaurant/#", role="super_admin")  # proves the leak topic really carries traffic
    try:
        assert attacker.connect() == ACCEPTED
        before = count(ACL_DENIALS, action="subscribe", role=role)
        assert attacker.subscribe(broker.topic(topic_filter), qos=watch_qos(broker)) == REFUSED
        if not on_nats(broker):
            assert_counted(ACL_DENIALS, before, action="subscribe", role=role)
            assert_logged(caplog, f"acl denied client_id={client_id!r} action=subscribe topic={topic_filter!r}")
        if leak is not None:
            secret = f"secret on {leak}".encode()
            publish_as_service(broker, leak, secret)
            receives(control, secret, broker.topic(leak))
            never_delivered(attacker, secret)
        assert attacker.client.is_connected(), "a refused SUBSCRIBE keeps the connection"
    finally:
        attacker.close()
        control.close()
    assert_still_serves(broker)


def test_allowed_filters_still_work_for_the_same_tokens(broker):
    """The refusals above are not blanket: each role gets exactly its own topics."""
    for (client_id, role, claims), topic_filter in [
        (PRINTER, "restaurant/7/kitchen/grill/tickets"),
        (PRINTER, "restaurant/7/orders/open/+"),
        (PRINTER, "restaurant/7/devices/printer-1/commands"),
        (TABLET, "restaurant/7/kitchen/+/tickets"),
        (SCALE, "restaurant/7/devices/scale-1/commands"),
        (DASHBOARD, "restaurant/7/#"),
        (OPS, "$SYS/#"),
        (SERVICE, "restaurant/+/devices/+/readings"),
    ]:
        sock = connected(broker, client_id, role, **claims)
        assert suback_code(sock, broker.topic(topic_filter)) == 1, (role, topic_filter)
        sock.close()


@pytest.mark.parametrize("station", ["+", "#", "grill/+", "a\x00b"])
def test_a_wildcard_in_a_claim_grants_nothing(broker, caplog, station):
    """A placeholder filled with a wildcard would widen the grant; the pattern is dropped instead."""
    sock = connected(broker, "printer-1", "printer", station=station)
    before = count(ACL_DENIALS, action="subscribe", role="printer")
    assert suback_code(sock, broker.topic("restaurant/7/kitchen/+/tickets")) == REFUSED
    assert suback_code(sock, broker.topic("restaurant/7/kitchen/grill/tickets"), packet_id=2) == REFUSED
    commands = broker.topic("restaurant/7/devices/printer-1/commands")
    assert suback_code(sock, commands, packet_id=3) == 1  # the rest still holds
    if not on_nats(broker):
        assert_counted(ACL_DENIALS, before, by=2, action="subscribe", role="printer")
        assert_logged(caplog, "acl denied client_id='printer-1' action=subscribe", times=2)
    assert_still_serves(broker)


async def _filters_of(broker_under_test: Any, client_id: str) -> list[str]:
    return [
        topic_filter
        for topic_filter, subscribers in broker_under_test.broker.subscriptions.items()
        if any(session.client_id == client_id for session, _ in subscribers)
    ]


def subscribed_filters(broker: Any, client_id: str) -> list[str]:
    """What the broker holds for this client: the embedded broker's filters (read in its own loop); on NATS
    the subjects node 0's connz lists for the MQTT client, without the gateway's own `$MQTT.` ones."""
    if on_nats(broker):
        return broker.held_subjects(client_id)
    return broker.call(_filters_of(broker, client_id))


GRANTED_LITERALLY, CLOSED = "granted literally", "closed"

# (raw filter bytes, requested QoS, a fragment of the embedded broker's log line, what NATS does)
ODD_FILTERS = [
    (b"restaurant/7/#/x", 1, "reason=malformed", REFUSED),  # `#` not last
    (b"restaurant/7/or+ders", 1, "reason=malformed", GRANTED_LITERALLY),  # `+` inside a level
    (b"restaurant/7/orders#", 1, "reason=malformed", GRANTED_LITERALLY),
    (b"restaurant/8/or+ders", 1, "reason=malformed", REFUSED),  # the same, in another restaurant
    (b"restaurant/7+/orders", 1, "reason=malformed", REFUSED),  # a restaurant id 7* is not restaurant 7
    (b"", 1, "reason=malformed", CLOSED),  # empty filter
]  # NUL, invalid UTF-8, QoS 3 or reserved bits: malformed packets that close (test_packets.py)


@pytest.mark.parametrize(
    ("topic_filter", "qos", "log_fragment", "on_nats_outcome"),
    ODD_FILTERS,
    ids=[repr(f[:24]) + f"-q{q}" for f, q, _, _ in ODD_FILTERS],
)
def test_a_filter_with_odd_characters_gets_suback_0x80(
    broker, caplog, topic_filter, qos, log_fragment, on_nats_outcome
):
    """paho refuses to send these; a raw socket does not. On the embedded broker, a filter that is a valid MQTT
    string but not a valid filter (wildcard misplaced, empty) gets SUBACK 0x80 [MQTT-3.9.3-2] and is never held.

    NATS differs, and never beyond the grant: a `+` or `#` inside a level becomes a `*` or `>` inside a
    subject token, which NATS matches literally (not as a wildcard), so inside the token's restaurant it is
    granted as one literal subject (against [MQTT-4.7.1-2, -3], harmless: it lies inside `restaurant.<rid>.>`),
    and anywhere else its permissions refuse it (0x80). An empty filter [MQTT-4.7.3-1] closes the connection."""
    sock = connected(broker, "dash")
    before = count(ACL_DENIALS, action="subscribe", role="admin")
    topic_filter = broker.topic(topic_filter.decode()).encode()
    code = suback_code(sock, topic_filter, qos=qos)
    if on_nats(broker) and on_nats_outcome == CLOSED:
        assert code is None and raw.closed_by_peer(sock, within=3.0)
        assert subscribed_filters(broker, "dash") == []
    elif on_nats(broker) and on_nats_outcome == GRANTED_LITERALLY:
        assert code == qos
        [subject] = subscribed_filters(broker, "dash")
        assert subject.startswith(f"restaurant.{broker.rid(7)}.") and subject.count(".") == 2, subject
    else:
        assert code == REFUSED
        assert subscribed_filters(broker, "dash") == []
        if not on_nats(broker):
            assert_counted(ACL_DENIALS, before, action="subscribe", role="admin")
            assert_logged(caplog, "client_id='dash'", log_fragment)
    if code is not None:
        sock.sendall(raw.PINGREQ)  # the connection itself is fine
        assert raw.read_packet(sock) == (13, b"")
    assert_still_serves(broker)


def test_a_filter_longer_than_an_mqtt_string_closes_the_connection(broker, caplog):
    """70,000 bytes do not fit a 2-byte length: it wraps to 4,464, and amqtt would read the rest of the
    filter as more (length, filter, QoS) triples, past the packet's end, and hang there (a QoS of
    ord('a') = 97 was granted). The framing check cuts the body as the standard does: the byte after
    the 4,464-byte filter is its requested QoS, 97, and that closes the connection [MQTT-3.8.3-4]."""
    sock = connected(broker, "dash")
    prefix = broker.topic("restaurant/7/").encode()
    long_filter = prefix + b"a" * (70_000 - len(prefix))
    body = struct.pack("!H", 1) + struct.pack("!H", len(long_filter) & 0xFFFF) + long_filter + b"\x01"
    before = count(DISCONNECTS, reason="bad_qos")
    sock.sendall(raw.packet(0x82, body))
    assert raw.closed_by_peer(sock, within=3.0)  # NATS closes it too
    if not on_nats(broker):
        assert_counted(DISCONNECTS, before, reason="bad_qos")
        assert_logged(caplog, "disconnect client_id='dash' reason=bad_qos")
    assert subscribed_filters(broker, "dash") == []
    assert_still_serves(broker)


def test_many_filters_in_one_subscribe_are_judged_one_by_one(broker, caplog):
    """A SUBSCRIBE mixing a good filter with bad ones: only the good one is granted [MQTT-3.9.3-1: one
    return code per filter, in order], on both engines."""
    sock = connected(broker, "dash")
    filters = [b"restaurant/7/orders", b"#", b"restaurant/8/orders", b"restaurant/7/#/x", b"$SYS/#"]
    filters = [broker.topic(f.decode()).encode() for f in filters]
    body = struct.pack("!H", 5) + b"".join(struct.pack("!H", len(f)) + f + b"\x01" for f in filters)
    before = count(ACL_DENIALS, action="subscribe", role="admin")
    sock.sendall(raw.packet(0x82, body))
    kind, answer = raw.expect_packet(sock)
    assert kind == 9 and list(answer[2:]) == [1, REFUSED, REFUSED, REFUSED, REFUSED]
    if on_nats(broker):
        assert subscribed_filters(broker, "dash") == [f"restaurant.{broker.rid(7)}.orders"]
    else:
        assert_counted(ACL_DENIALS, before, by=4, action="subscribe", role="admin")
        assert_logged(caplog, "client_id='dash'", times=4)
        assert subscribed_filters(broker, "dash") == ["restaurant/7/orders"]
    assert_still_serves(broker)


@pytest.mark.embedded_only("counts the embedded broker's delivery-time denials of a persistent session")
def test_a_narrower_token_on_reconnect_stops_deliveries_through_old_subscriptions(broker, caplog):
    """A printer moved from the grill to the bar (its token re-issued) keeps its persistent session and its
    old grill subscription; every grill ticket is checked again at delivery: queued while it was offline
    (retained or not), or live. (A reconnect makes no new subscription, so no retained copy is sent
    [MQTT-3.3.1-6].)"""
    grill = raw.open_socket(broker.port)
    grill.sendall(raw.connect("printer-1", broker.token("printer-1", "printer", station="grill"), clean=False))
    assert raw.connack_code(grill) == ACCEPTED
    assert suback_code(grill, "restaurant/7/kitchen/grill/tickets") == 1
    grill.sendall(raw.DISCONNECT)
    grill.close()
    before = {action: count(ACL_DENIALS, action=action, role="printer") for action in ("receive", "receive_retained")}
    publish_as_service(broker, "restaurant/7/kitchen/grill/tickets", b"queued grill ticket")  # while offline
    publish_as_service(broker, "restaurant/7/kitchen/grill/tickets", b"retained grill ticket", retain=True)
    bar = raw.open_socket(broker.port)
    bar.sendall(raw.connect("printer-1", broker.token("printer-1", "printer", station="bar"), clean=False))
    assert raw.connack_code(bar) == ACCEPTED
    publish_as_service(broker, "restaurant/7/kitchen/grill/tickets", b"live grill ticket")
    bar.settimeout(1.0)
    with pytest.raises(TimeoutError):
        got = raw.read_packet(bar)
        raise AssertionError(f"delivered to the bar printer: {got}")
    assert count(ACL_DENIALS, action="receive", role="printer") >= before["receive"] + 3  # 2 queued, 1 live
    assert count(ACL_DENIALS, action="receive_retained", role="printer") == before["receive_retained"]
    assert_logged(caplog, "acl denied client_id='printer-1' action=receive", times=3)
    assert_still_serves(broker)
