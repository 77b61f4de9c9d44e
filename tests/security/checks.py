"""What every attack test checks afterwards: the refusal was counted and logged with its reason,
and the broker still serves a valid client (connect, subscribe, receive)."""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import time
from typing import Any

import pytest

from broker.nats.callout import DECISIONS
from broker.stats import AUTH_FAILURES
from scripts import raw_mqtt as raw
from tests.support import Received, Subscriber, wait_for

# Who connects in the policy checks: (client id, role, extra claims)
Identity = tuple[str, str, dict[str, Any]]  # (client id, role, extra claims)
PRINTER: Identity = ("printer-1", "printer", {"station": "grill"})
TABLET: Identity = ("kds-1", "tablet", {})
SCALE: Identity = ("scale-1", "scale", {})
DASHBOARD: Identity = ("dash", "admin", {})
STAFF: Identity = ("till", "staff", {})
OPS: Identity = ("ops-1", "ops", {"rid": None})
SERVICE: Identity = ("relay", "service", {"rid": None})


ACCEPTED, NOT_AUTHORIZED = 0, 5
PUBACK, SUBACK, PINGRESP = 4, 9, 13
REFUSED = 0x80
BROKER_LOG = "orderbus.broker"
CALLOUT_LOG = "orderbus.callout"  # NATS: our responder's log; NATS's own refusals are in the node's log only

_probes = itertools.count()


@pytest.fixture(autouse=True)
def broker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The broker's own log at INFO (refusals are WARNING, ACL denials INFO). Import it into a test module."""
    caplog.set_level(logging.INFO, logger=BROKER_LOG)
    return caplog


def count(counter: Any, **labels: str) -> float:
    return counter.labels(**labels)._value.get()


def logged(caplog: pytest.LogCaptureFixture, *fragments: str, logger: str = BROKER_LOG) -> int:
    """How many broker log lines contain every fragment."""
    return sum(
        1
        for record in list(caplog.records)
        if record.name == logger and all(fragment in record.getMessage() for fragment in fragments)
    )


def assert_logged(
    caplog: pytest.LogCaptureFixture, *fragments: str, times: int = 1, timeout: float = 5.0, logger: str = BROKER_LOG
) -> None:
    """At least `times` broker log lines contain every fragment (waits: the broker logs from its own thread)."""
    try:
        wait_for(lambda: logged(caplog, *fragments, logger=logger) >= times, timeout=timeout)
    except AssertionError:
        lines = [r.getMessage()[:200] for r in caplog.records if r.name == logger][-10:]
        raise AssertionError(f"no {logger} log line with {fragments} (x{times}); last lines: {lines}") from None


def assert_counted(counter: Any, before: float, by: float = 1, timeout: float = 5.0, **labels: str) -> None:
    """The counter moved by exactly `by` (waits for the broker thread, then checks it did not overshoot)."""
    try:
        wait_for(lambda: count(counter, **labels) >= before + by, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{labels}: {count(counter, **labels) - before} counted, expected {by}") from None
    assert count(counter, **labels) == before + by, labels


def on_nats(broker: Any) -> bool:
    return broker.engine == "nats"


def watch_qos(broker: Any) -> int:
    """The QoS a watcher subscribes with. On NATS a QoS 1 subscription delivers only once its JetStream
    consumer is up, some time after the SUBACK (tests/support.py `nats_subscribed`); a QoS 0 one delivers
    from its SUBACK on, so a message published right after it cannot slip past a watcher (or an attacker)."""
    return 0 if on_nats(broker) else 1


def opened(broker: Any, sock: socket.socket) -> socket.socket:
    """A raw socket closed when the test ends on NATS (the cluster outlives the test, the embedded broker not)."""
    if on_nats(broker):
        broker.opened.append(sock)
    return sock


def connect_refusals(broker: Any, reason: str) -> float:
    """Refused CONNECTs of this reason so far: the embedded broker's `auth_failures`, on NATS our responder's
    `callout_decisions` (the same `admit()` decides both, so the reasons are the same words)."""
    if on_nats(broker):
        return count(DECISIONS, result=reason)
    return count(AUTH_FAILURES, reason=reason)


def assert_connect_refusal_counted(
    broker: Any, caplog: pytest.LogCaptureFixture, before: float, client_id: str, reason: str
) -> None:
    """Counted once and logged with the reason, by whichever engine refused it."""
    if on_nats(broker):
        assert_counted(DECISIONS, before, result=reason)
        assert_logged(caplog, f"callout refused client_id={client_id!r}", f"reason={reason}", logger=CALLOUT_LOG)
    else:
        assert_counted(AUTH_FAILURES, before, reason=reason)
        assert_logged(caplog, f"connect refused client_id={client_id!r}", f"reason={reason}")


def connected(broker: Any, client_id: str, role: str = "admin", **claims: Any) -> socket.socket:
    """A raw socket with an accepted CONNECT; `rid` defaults to 7 (pass rid=None for unscoped roles)."""
    sock = opened(broker, raw.open_socket(broker.port))
    sock.sendall(raw.connect(client_id, broker.token(client_id, role, **claims)))
    assert raw.connack_code(sock) == ACCEPTED
    return sock


def suback_code(sock: socket.socket, topic_filter: str | bytes, qos: int = 1, packet_id: int = 1) -> int | None:
    """SUBSCRIBE one filter; the SUBACK's return code, or None when the broker closed the connection."""
    sock.sendall(raw.subscribe(topic_filter, packet_id=packet_id, qos=qos))
    try:
        answer = raw.read_packet(sock)
    except ConnectionResetError:
        return None
    if answer is None:
        return None
    kind, body = answer
    assert kind == SUBACK, f"expected SUBACK, got packet type {kind}"
    assert struct.unpack("!H", body[:2])[0] == packet_id
    return body[2]


def watcher(broker: Any, topic_filter: str, role: str = "service") -> Subscriber:
    """A legitimate subscriber (service or admin token) that would see an attack's message if it got through."""
    client_id = f"watch-{next(_probes)}"
    rid = None if role in ("service", "super_admin", "ops") else 7
    sub = Subscriber(broker.port, client_id, broker.token(client_id, role, rid=rid))
    assert sub.connect() == ACCEPTED
    assert sub.subscribe(broker.topic(topic_filter), qos=watch_qos(broker)) != REFUSED
    return sub


def receives(sub: Subscriber, payload: bytes, topic: str | None = None, timeout: float = 10.0) -> Received:
    """Waits for `payload` (on `topic`, when given) among what `sub` gets and returns it: on NATS a wildcard
    watcher first gets the retained messages of every earlier test of the session."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in sub.collect(1, timeout=max(0.01, deadline - time.monotonic())):
            if message.payload == payload and topic in (None, message.topic):
                return message
    raise AssertionError(f"{payload!r} never arrived on {topic or 'any topic'}")


def publish_as_service(broker: Any, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """The bus publishes (QoS 1, waits for the PUBACK so the message is in the broker when this returns)."""
    bus = connected(broker, f"bus-{next(_probes)}", "service", rid=None)
    bus.sendall(raw.publish(broker.topic(topic), payload, qos=1, retain=retain))
    answer = raw.read_packet(bus)
    assert answer is not None and answer[0] == PUBACK
    bus.sendall(raw.DISCONNECT)
    bus.close()


def never_delivered(sub: Subscriber, payload: bytes, quiet: float = 0.5, topic: str | None = None) -> list[Received]:
    """Everything `sub` got until quiet; asserts that `payload` (on `topic`, when given: the same payload may
    be another test's retained message on NATS) is not among it."""
    got = sub.drain(quiet=quiet)
    hits = [m.topic for m in got if m.payload == payload and topic in (None, m.topic)]
    assert not hits, f"{payload!r} was delivered on {hits}"
    return got


def assert_still_serves(broker: Any) -> None:
    """A fresh valid client connects, subscribes and receives a message the bus publishes."""
    n = next(_probes)
    client_id = f"probe-{n}"
    sub = Subscriber(broker.port, client_id, broker.token(client_id, "admin"))
    try:
        assert sub.connect() == ACCEPTED, "a valid client was refused"
        qos = watch_qos(broker)
        assert sub.subscribe(broker.topic("restaurant/7/orders"), qos=qos) == qos, "a valid subscription was refused"
        payload = f"still serving {n} {time.monotonic()}".encode()
        publish_as_service(broker, "restaurant/7/orders", payload)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if payload in [m.payload for m in sub.collect(1, timeout=deadline - time.monotonic())]:
                return
        raise AssertionError("the valid client never received the message")
    finally:
        sub.close()
