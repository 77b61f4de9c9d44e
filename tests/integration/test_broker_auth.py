"""The embedded broker with real paho clients: tokens at CONNECT, the ACL on subscribe and publish."""

from __future__ import annotations

import time

import jwt
import pytest

from broker.stats import ACL_DENIALS, AUTH_FAILURES
from core.tokens import TokenService
from tests.support import Stack, Subscriber

NOT_AUTHORIZED = 135  # CONNACK 5 (not authorized) as paho reports it
REFUSED = 0x80


def connect(stack: Stack, subscribers: list[Subscriber], client_id: str, token: str) -> tuple[Subscriber, int]:
    subscriber = Subscriber(stack.settings.mqtt_port, client_id, token)
    subscribers.append(subscriber)
    return subscriber, subscriber.connect()


def failures(reason: str) -> float:
    return AUTH_FAILURES.labels(reason=reason)._value.get()


def expired_token(stack: Stack) -> str:
    now = int(time.time())
    claims = {"sub": "dash", "rid": 7, "role": "admin", "aud": "mqtt", "iat": now - 100, "exp": now - 10, "jti": "x"}
    return jwt.encode(claims, stack.parts.tokens.key, algorithm="HS256")


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda s: "not-a-jwt", "malformed"),
        (lambda s: "", "no_token"),
        (expired_token, "expired"),
        (lambda s: s.api_token("dash", "admin", 7), "wrong_audience"),
        (
            lambda s: jwt.encode(
                {"sub": "dash", "rid": 7, "role": "admin", "aud": "mqtt", "iat": 1, "exp": 2**31, "jti": "x"},
                b"some-other-key-of-thirty-two-bytes!",
                algorithm="HS256",
            ),
            "bad_signature",
        ),
    ],
)
def test_bad_tokens_are_refused_at_connect(stack: Stack, subscribers, make_token, reason):
    before = failures(reason)
    _, code = connect(stack, subscribers, "dash", make_token(stack))
    assert code == NOT_AUTHORIZED
    assert failures(reason) == before + 1


def test_client_id_is_bound_to_the_token_subject(stack: Stack, subscribers):
    token = stack.mqtt_token("dash", "admin", 7)
    assert connect(stack, subscribers, "someone-else", token)[1] == NOT_AUTHORIZED
    assert connect(stack, subscribers, "dashx", token)[1] == NOT_AUTHORIZED
    assert connect(stack, subscribers, "dash:", token)[1] == NOT_AUTHORIZED
    assert connect(stack, subscribers, "dash", token)[1] == 0
    assert connect(stack, subscribers, "dash:tab-2", token)[1] == 0  # a second browser tab


def test_a_dashboard_gets_its_restaurant_and_nothing_else(stack: Stack, subscribers):
    dashboard, code = connect(stack, subscribers, "dash", stack.mqtt_token("dash", "admin", 7))
    assert code == 0
    before = ACL_DENIALS.labels(action="subscribe", role="admin")._value.get()
    for refused in (
        "#",
        "+/#",
        "restaurant/#",
        "restaurant/+/orders",
        "restaurant/8/orders",
        "restaurant/8/#",
        "$SYS/#",
    ):
        assert dashboard.subscribe(refused) == REFUSED, refused
    assert ACL_DENIALS.labels(action="subscribe", role="admin")._value.get() >= before + 7
    assert dashboard.subscribe("restaurant/7/#") == 1
    assert dashboard.subscribe("restaurant/7/orders") == 1


def test_publishes_outside_the_role_are_dropped(stack: Stack, subscribers):
    service, _ = connect(stack, subscribers, "svc", stack.mqtt_token("svc", "service", None))
    assert service.subscribe("restaurant/+/devices/+/status") == 1
    watcher, _ = connect(stack, subscribers, "watch", stack.mqtt_token("watch", "admin", 7))
    watcher.subscribe("restaurant/7/#")

    dashboard, _ = connect(stack, subscribers, "dash", stack.mqtt_token("dash", "admin", 7))
    dashboard.client.publish("restaurant/7/orders", b'{"fake": true}', qos=1).wait_for_publish(5)
    scale, _ = connect(stack, subscribers, "scale-1", stack.mqtt_token("scale-1", "scale", 7))
    scale.client.publish("restaurant/7/devices/scale-2/readings", b"{}", qos=1).wait_for_publish(5)
    scale.client.publish("restaurant/7/inventory/items/1", b"{}", qos=1, retain=True).wait_for_publish(5)
    scale.client.publish("restaurant/7/devices/scale-1/readings", b"{}", qos=1, retain=True).wait_for_publish(5)
    scale.client.publish("restaurant/7/devices/scale-1/status", b'{"state":"online"}', qos=1, retain=True)

    got = [m for m in watcher.drain(quiet=0.5) if m.topic != "restaurant/7/devices/scale-1/commands"]
    assert [(m.topic, m.retain) for m in got] == [("restaurant/7/devices/scale-1/status", False)]
    # (on scale-1's commands topic: the bus's answers to its messages, e.g. "unknown_device")
    assert [m.topic for m in service.collect(1)] == ["restaurant/7/devices/scale-1/status"]


def test_a_printer_sees_its_station_only(stack: Stack, subscribers):
    printer, _ = connect(stack, subscribers, "printer-1", stack.mqtt_token("printer-1", "printer", 7, station="grill"))
    assert printer.subscribe("restaurant/7/kitchen/grill/tickets") == 1
    assert printer.subscribe("restaurant/7/kitchen/bar/tickets") == REFUSED
    assert printer.subscribe("restaurant/7/kitchen/+/tickets") == REFUSED
    assert printer.subscribe("restaurant/7/devices/printer-1/commands") == 1
    assert printer.subscribe("restaurant/7/devices/kds-1/commands") == REFUSED
    assert printer.subscribe("restaurant/7/orders") == REFUSED


def test_retained_messages_never_cross_restaurants(stack: Stack, subscribers):
    """amqtt sends retained messages on connect for every client's filters; ours only where the ACL allows."""
    bus, _ = connect(stack, subscribers, "svc", stack.mqtt_token("svc", "service", None))
    bus.client.publish("restaurant/7/orders/open/1", b'{"secret": 7}', qos=1, retain=True).wait_for_publish(5)
    bus.client.publish("restaurant/8/orders/open/2", b'{"mine": 8}', qos=1, retain=True).wait_for_publish(5)
    seven, _ = connect(stack, subscribers, "dash7", stack.mqtt_token("dash7", "admin", 7))
    assert seven.subscribe("restaurant/7/#") == 1
    assert [m.topic for m in seven.collect(1)] == ["restaurant/7/orders/open/1"]

    eight, _ = connect(stack, subscribers, "dash8", stack.mqtt_token("dash8", "admin", 8))
    assert eight.subscribe("restaurant/8/orders/open/+") == 1
    got = eight.drain(quiet=0.5)
    assert [m.topic for m in got] == ["restaurant/8/orders/open/2"]
    assert seven.drain(quiet=0.2) == []


def test_during_a_key_rotation_the_broker_takes_tokens_of_both_keys_and_nothing_else(tmp_path, subscribers):
    """`jwt_key` = the new key, `jwt_previous_keys` = the old one (docs/deploy.md): a printer still
    holding a token of the old key connects; a token of a third key is refused [MQTT-3.1.4-1 / CONNACK 5]."""
    old, new = "o" * 64, "n" * 64
    stack = Stack(tmp_path / "data", jwt_key=new, jwt_previous_keys=[old])
    stack.start()
    try:
        port = stack.settings.mqtt_port
        for key, accepted in ((old, True), (new, True), ("x" * 64, False)):
            client_id = f"printer-{key[0]}"
            token = TokenService(key.encode()).issue(
                sub=client_id, role="printer", rid=7, audience="mqtt", ttl_seconds=60, extra={"station": "grill"}
            )
            subscriber = Subscriber(port, client_id, token)
            subscribers.append(subscriber)
            assert (subscriber.connect() == 0) is accepted, key[0]
        assert TokenService(new.encode()).verify(stack.mqtt_token("dash", "admin", 7), "mqtt")["sub"] == "dash"
    finally:
        stack.stop()
