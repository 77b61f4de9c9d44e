"""Our auth-callout responder in front of a real nats-server 2.15.1, driven by paho MQTT 3.1.1 clients.

What the embedded broker enforces (DESIGN.md, "Auth and ACL") must hold on NATS too: the token is the
password and binds the client id to its `sub` (MQTT-3.1.3-8: a server may refuse a client id, CONNACK
return code 0x05 "not authorized" here), a connection may subscribe and publish only what the policy
grants (MQTT-3.8.4-1 lets a server refuse a subscription with SUBACK 0x80), a revoked device is refused
and disconnected, a token ends its connection at expiry, and nothing gets in when the responder cannot
decide. Where NATS differs (a refused PUBLISH is dropped silently; retain cannot be told apart by
permissions) the test says so, and docs/security.md explains it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import nats
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from broker.nats import CalloutUnavailable, nkeyjwt
from broker.nats.callout import CALLOUT_SUBJECT, Credentials, Decider
from broker.nats.responder import Responder
from cli.callout import start_responder, stop_responder
from core.tokens import ALGORITHM, TokenService
from scripts.ports import free_port
from tests.integration.nats_callout_support import NatsCallout, seconds_to_disconnect
from tests.support import Subscriber, run_async, wait_for

SUBACK_REFUSED = 0x80
NOT_AUTHORIZED = 135  # CONNACK 0x05, as paho reports it: the embedded broker's code for a refused token too
IDENTIFIER_REJECTED = 133  # CONNACK 0x02


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCallout]:
    made = NatsCallout(tmp_path_factory.mktemp("nats-callout"))
    try:
        made.start_server()
        made.start_responder()
        yield made
    finally:
        made.stop()


@pytest.fixture
def callout(node: NatsCallout) -> NatsCallout:
    """The node with its responder running (a test may have stopped it)."""
    if node.responder is None:
        node.start_responder()
    return node


@pytest.fixture
def clients() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def rid(node: NatsCallout) -> int:
    return node.add_restaurant("Bistro", "admin@bistro.test")


# `orderbus_callout_decisions_total` is process-wide: the session cluster's responder (tests/conftest.py) counts
# into it too, and every device link's probe CONNECT (devices/refusal.py: a password that is no token) that lands
# there while this module runs is a `malformed_request`. So these tests count at least their own, and prove
# each refusal by its reply.
def decisions(result: str) -> float:
    return REGISTRY.get_sample_value("orderbus_callout_decisions_total", {"result": result}) or 0.0


def connect(callout: NatsCallout, clients: list[Subscriber], client_id: str, token: str, **kw: Any) -> Subscriber:
    client = Subscriber(kw.pop("port", callout.mqtt_port), client_id, token, **kw)
    clients.append(client)
    code = client.connect()
    assert code == 0, f"{client_id}: CONNACK {code}: {callout.log_tail(800)}"
    return client


def refused(callout: NatsCallout, client_id: str, token: str) -> int:
    client = Subscriber(callout.mqtt_port, client_id, token)
    try:
        return client.connect()
    finally:
        client.close()


def observer(callout: NatsCallout, clients: list[Subscriber], name: str) -> Subscriber:
    """A super_admin dashboard on every restaurant's topics: it sees what reaches the broker."""
    watcher = connect(callout, clients, name, callout.mqtt_token(name, "super_admin", None))
    assert watcher.subscribe("restaurant/#", qos=0) == 0
    watcher.drain()  # retained state earlier tests left: not what this one watches for
    return watcher


def published(client: Subscriber, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
    info = client.client.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(5)
    assert qos == 0 or info.is_published(), "not acknowledged: NATS acknowledges refused publishes too (silent drop)"


def test_each_role_may_subscribe_exactly_what_the_policy_grants(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    printer_token = callout.add_device(rid, "sub-printer", "printer", station="grill")
    cases: dict[str, tuple[Subscriber, list[str], list[str]]] = {}
    printer = connect(callout, clients, "sub-printer", printer_token)
    cases["printer"] = (
        printer,
        [f"restaurant/{rid}/kitchen/grill/tickets", f"restaurant/{rid}/orders/open/+"],
        [f"restaurant/{rid}/kitchen/bar/tickets", f"restaurant/{rid}/kitchen/+/tickets", f"restaurant/{rid}/#"],
    )
    admin = connect(callout, clients, "dash-1:tab-a", callout.mqtt_token("dash-1", "admin", rid))
    cases["admin"] = (
        admin,
        [f"restaurant/{rid}/#", f"restaurant/{rid}/orders"],
        ["#", "restaurant/#", "restaurant/+/orders", f"restaurant/{rid + 1}/orders", "$MQTT/msgs/#"],
    )
    service = connect(callout, clients, "orderbus-relay", callout.mqtt_token("orderbus-relay", "service", None))
    cases["service"] = (
        service,
        ["restaurant/+/devices/+/events", "restaurant/+/orders/open/+"],
        ["restaurant/+/orders", "restaurant/#"],
    )
    tablet = connect(callout, clients, "sub-tablet", callout.add_device(rid, "sub-tablet", "tablet"))
    cases["tablet"] = (
        tablet,
        [
            f"restaurant/{rid}/orders",
            f"restaurant/{rid}/kitchen/+/tickets",
            f"restaurant/{rid}/devices/sub-tablet/commands",
        ],
        [
            f"restaurant/{rid}/inventory",
            f"restaurant/{rid}/devices/sub-printer/commands",
            f"restaurant/{rid}/devices/+/commands",
        ],
    )
    scale = connect(callout, clients, "sub-scale", callout.add_device(rid, "sub-scale", "scale"))
    cases["scale"] = (
        scale,
        [f"restaurant/{rid}/devices/sub-scale/commands"],
        [f"restaurant/{rid}/orders", f"restaurant/{rid}/devices/sub-scale/#"],
    )
    staff = connect(callout, clients, "staff-1", callout.mqtt_token("staff-1", "staff", rid))
    cases["staff"] = (staff, [f"restaurant/{rid}/#"], [f"restaurant/{rid + 1}/#", "$SYS/#"])
    boss = connect(callout, clients, "boss-1", callout.mqtt_token("boss-1", "super_admin", None))
    cases["super_admin"] = (boss, ["restaurant/#", "restaurant/+/orders"], ["#", "$SYS/#", "other/#"])
    ops = connect(callout, clients, "ops-1", callout.mqtt_token("ops-1", "ops", None))
    cases["ops"] = (ops, ["$SYS/#", "$SYS/broker/load"], ["restaurant/#", "#", f"restaurant/{rid}/orders"])
    for role, (client, allowed, refused_filters) in cases.items():
        for topic_filter in allowed:
            assert client.subscribe(topic_filter) in (0, 1), (role, topic_filter)
        for topic_filter in refused_filters:
            assert client.subscribe(topic_filter) == SUBACK_REFUSED, (role, topic_filter)
        assert client.client.is_connected(), f"{role}: a refused SUBSCRIBE keeps the connection on NATS"


def test_publishes_are_allowed_or_dropped_silently_as_the_policy_says(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    watcher = observer(callout, clients, "watch-pub")
    tablet = connect(callout, clients, "pub-tablet", callout.add_device(rid, "pub-tablet", "tablet"))
    scale = connect(callout, clients, "pub-scale", callout.add_device(rid, "pub-scale", "scale"))
    admin = connect(callout, clients, "pub-admin", callout.mqtt_token("pub-admin", "admin", rid))
    service = connect(callout, clients, "pub-service", callout.mqtt_token("pub-service", "service", None))
    allowed = [
        (tablet, f"restaurant/{rid}/devices/pub-tablet/events"),
        (tablet, f"restaurant/{rid}/devices/pub-tablet/status"),
        (scale, f"restaurant/{rid}/devices/pub-scale/readings"),
        (service, f"restaurant/{rid}/orders"),
        (service, f"restaurant/{rid + 5}/kitchen/grill/tickets"),
    ]
    refused_topics = [
        (tablet, f"restaurant/{rid}/orders"),
        (tablet, f"restaurant/{rid}/devices/pub-scale/readings"),  # another device's topic
        (scale, f"restaurant/{rid}/devices/pub-scale/events"),
        (admin, f"restaurant/{rid}/orders"),  # dashboards publish nothing
        (admin, f"restaurant/{rid}/devices/pub-tablet/commands"),
        (service, "elsewhere/orders"),
    ]
    for client, topic in refused_topics + allowed:  # refused first: had any got through, it would arrive first
        published(client, topic, f"from {client.client_id}".encode())
    got = watcher.collect(len(allowed))
    assert [m.topic for m in got] == [topic for _, topic in allowed]
    assert watcher.drain() == []
    for client, _ in refused_topics:
        assert client.client.is_connected(), "a refused PUBLISH is silent on NATS: no disconnect"


def test_deliveries_and_persistent_qos1_sessions_need_no_extra_permission(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """QoS 1 subscriptions are JetStream consumers delivering on `$MQTT.sub.<nuid>`; nats-server allows
    an MQTT client those internal subjects by itself, so the minted permissions are the topics alone."""
    token = callout.add_device(rid, "qos-printer", "printer", station="grill")
    printer = connect(callout, clients, "qos-printer", token, clean_session=False)
    topic = f"restaurant/{rid}/kitchen/grill/tickets"
    assert printer.subscribe(topic, qos=1) == 1
    printer.close()
    service = connect(callout, clients, "qos-service", callout.mqtt_token("qos-service", "service", None))
    published(service, topic, b"ticket-1")
    published(service, f"restaurant/{rid}/kitchen/bar/tickets", b"not for the grill")
    again = connect(callout, clients, "qos-printer", token, clean_session=False)
    assert [m.payload for m in again.collect(1)] == [b"ticket-1"]
    assert again.drain() == []


def test_qos2_works_with_the_same_permissions(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    """QoS 2 releases travel on `$MQTT.deliver.pubrel.…`, which nats-server also allows an MQTT client
    by itself (the bus uses QoS 0 and 1; a third-party client may ask for 2)."""
    dash = connect(callout, clients, "q2-dash", callout.mqtt_token("q2-dash", "admin", rid))
    assert dash.subscribe(f"restaurant/{rid}/menu", qos=2) == 2
    service = connect(callout, clients, "q2-service", callout.mqtt_token("q2-service", "service", None))
    published(service, f"restaurant/{rid}/menu", b"menu v2", qos=2)
    assert [m.payload for m in dash.collect(1)] == [b"menu v2"]


def test_retained_state_and_the_retain_difference(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    """The bus's retained state reaches a screen that connects later; a device may keep its presence
    retained. NATS cannot refuse the retain flag by permission (the gateway stores retained messages on
    `$MQTT.rmsgs` itself, not as the client): a device's retained publish on a topic it may publish is
    kept on NATS (the embedded broker refuses it), while a topic it may not publish stays untouched."""
    service = connect(callout, clients, "ret-service", callout.mqtt_token("ret-service", "service", None))
    tablet = connect(callout, clients, "ret-tablet", callout.add_device(rid, "ret-tablet", "tablet"))
    published(service, f"restaurant/{rid}/orders/open/41", b'{"id": 41}', retain=True)
    published(tablet, f"restaurant/{rid}/devices/ret-tablet/status", b"online", retain=True)
    published(tablet, f"restaurant/{rid}/devices/ret-tablet/events", b"retained event", retain=True)
    published(tablet, f"restaurant/{rid}/orders/open/42", b"forged", retain=True)

    screen = connect(callout, clients, "ret-screen", callout.mqtt_token("ret-screen", "admin", rid))
    assert screen.subscribe(f"restaurant/{rid}/#", qos=0) == 0
    got = {m.topic: m for m in screen.collect(3)}
    assert got[f"restaurant/{rid}/orders/open/41"].retain and got[f"restaurant/{rid}/orders/open/41"].payload
    assert got[f"restaurant/{rid}/devices/ret-tablet/status"].payload == b"online"
    assert got[f"restaurant/{rid}/devices/ret-tablet/events"].retain  # the documented difference
    assert screen.drain() == [], "the tablet's retained publish on a bus topic must not be stored"


def test_claims_that_would_be_nats_wildcards_grant_nothing(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """A printer token (minted by hand, `orderbus token`) whose station is `*` must not become the NATS
    wildcard `restaurant.7.kitchen.*.tickets`, which would let it read every station's tickets: that
    grant is left out. A station with a dot travels as NATS maps it (`hot.line` → `hot//line`)."""
    service = connect(callout, clients, "map-service", callout.mqtt_token("map-service", "service", None))
    star = connect(callout, clients, "map-star", callout.mqtt_token("map-star", "printer", rid, station="*"))
    dotted = connect(callout, clients, "map-dot", callout.mqtt_token("map-dot", "printer", rid, station="hot.line"))
    assert star.subscribe(f"restaurant/{rid}/kitchen/+/tickets") == SUBACK_REFUSED
    assert star.subscribe(f"restaurant/{rid}/kitchen/*/tickets") == SUBACK_REFUSED
    assert dotted.subscribe(f"restaurant/{rid}/kitchen/hot.line/tickets") == 1
    published(service, f"restaurant/{rid}/kitchen/grill/tickets", b"grill ticket")
    published(service, f"restaurant/{rid}/kitchen/hot.line/tickets", b"hot line ticket")
    assert [m.payload for m in dotted.collect(1)] == [b"hot line ticket"]
    assert star.drain() == [] and dotted.drain() == []


def test_client_ids_nats_cannot_name_are_refused_before_the_callout(callout: NatsCallout, rid: int) -> None:
    """nats-server refuses an MQTT client id with `.`, `*`, `>` or whitespace (CONNACK 0x02, identifier
    rejected) before asking us; the client id is bound to `sub`, so such subjects cannot connect to NATS
    (device ids never contain them; docs/security.md)."""
    before = decisions("allowed")
    for sub in ("kds.1", "*", ">"):
        assert refused(callout, sub, callout.mqtt_token(sub, "tablet", rid)) == IDENTIFIER_REJECTED
    assert decisions("allowed") == before


def test_a_dashboard_over_websocket_gets_its_grants(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    """MQTT over WebSocket (path /mqtt) reaches the callout as an `mqtt` client too."""
    service = connect(callout, clients, "ws-service", callout.mqtt_token("ws-service", "service", None))
    token = callout.mqtt_token("ws-dash", "staff", rid)
    dash = connect(callout, clients, "ws-dash:tab", token, transport="websockets", port=callout.ws_port)
    assert dash.subscribe(f"restaurant/{rid}/orders", qos=0) == 0
    assert dash.subscribe(f"restaurant/{rid + 1}/orders", qos=0) == SUBACK_REFUSED
    published(service, f"restaurant/{rid}/orders", b"new_order")
    assert [m.payload for m in dash.collect(1)] == [b"new_order"]


def test_a_will_the_policy_refuses_is_dropped_not_refused_at_connect(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """The embedded broker refuses a CONNECT whose Last Will the policy does not allow; NATS does not
    show the will to the callout, so the connection is let in and the will is dropped when it fires
    (a refused publish, silent). An allowed will (the device's presence) is published."""
    watcher = observer(callout, clients, "watch-will")
    for device, topic in (
        ("will-bad", f"restaurant/{rid}/orders"),
        ("will-ok", f"restaurant/{rid}/devices/will-ok/status"),
    ):
        client = Subscriber(callout.mqtt_port, device, callout.add_device(rid, device, "tablet"))
        client.client.will_set(topic, b"lost", qos=1, retain=False)
        clients.append(client)
        assert client.connect() == 0
        client.client.loop_stop()
        sock = client.client.socket()
        assert sock is not None
        sock.close()  # gone without DISCONNECT: the broker publishes the will
    got = watcher.collect(1)
    assert [(m.topic, m.payload) for m in got] == [(f"restaurant/{rid}/devices/will-ok/status", b"lost")]
    assert watcher.drain(quiet=1.0) == []


def test_client_id_must_be_the_tokens_subject(callout: NatsCallout, rid: int) -> None:
    token = callout.mqtt_token("dash-9", "admin", rid)
    before = decisions("client_id_mismatch")
    assert refused(callout, "someone-else", token) == NOT_AUTHORIZED
    assert refused(callout, "dash-9:", token) == NOT_AUTHORIZED  # an empty suffix is not a tab
    assert decisions("client_id_mismatch") == before + 2


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("expired", lambda c, rid: _expired(c.tokens, rid)),
        ("malformed", lambda c, rid: "not-a-jwt"),
        (
            "wrong_audience",
            lambda c, rid: c.tokens.issue(sub="bad-1", role="admin", rid=rid, audience="api", ttl_seconds=60),
        ),
        (
            "bad_signature",
            lambda c, rid: TokenService(b"k" * 32).issue(
                sub="bad-1", role="admin", rid=rid, audience="mqtt", ttl_seconds=60
            ),
        ),
        ("no_token", lambda c, rid: ""),
    ],
)
def test_bad_tokens_are_refused_and_counted(callout: NatsCallout, rid: int, reason: str, make: Any) -> None:
    before = decisions(reason)
    assert refused(callout, "bad-1", make(callout, rid)) == NOT_AUTHORIZED
    assert decisions(reason) == before + 1


def _expired(tokens: TokenService, rid: int) -> str:
    """A token of our key that expired a minute ago (TokenService only issues live ones)."""
    now = int(time.time())
    claims = {"sub": "bad-1", "rid": rid, "role": "admin", "iat": now - 120, "exp": now - 60, "jti": "x", "aud": "mqtt"}
    return jwt.encode(claims, tokens.key, algorithm=ALGORITHM)


def test_a_revoked_device_is_refused_and_an_online_one_kicked_within_a_second(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    token = callout.add_device(rid, "rev-printer", "printer", station="grill")
    printer = connect(callout, clients, "rev-printer", token)
    kicks = REGISTRY.get_sample_value("orderbus_callout_kicks_total", {"result": "ok"}) or 0.0
    took = seconds_to_disconnect(printer, lambda: callout.revoke(rid, "rev-printer"))
    assert took <= 1.0, f"revoked device still connected after {took:.2f}s"  # the watch reads every 0.5 s
    # the client may see its socket close before the responder has the server's reply to its kick
    wait_for(lambda: REGISTRY.get_sample_value("orderbus_callout_kicks_total", {"result": "ok"}) == kicks + 1)
    assert refused(callout, "rev-printer", token) == NOT_AUTHORIZED
    assert not callout.connz(mqtt_client="rev-printer")["connections"]


def test_a_restarted_responder_still_kicks_what_an_earlier_run_let_in(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """The responder recalls the cluster's connections from CONNZ when it starts (the user name carries
    sub, role and jti): a device let in by an earlier run is kicked when revoked, and one revoked while
    no responder ran is kicked as soon as one starts."""
    first = connect(callout, clients, "old-printer", callout.add_device(rid, "old-printer", "printer", station="bar"))
    second = connect(callout, clients, "old-tablet", callout.add_device(rid, "old-tablet", "tablet"))
    callout.stop_responder()
    callout.revoke(rid, "old-tablet")
    callout.start_responder()
    wait_for(lambda: not second.client.is_connected(), timeout=5)
    assert first.client.is_connected()
    took = seconds_to_disconnect(first, lambda: callout.revoke(rid, "old-printer"))
    assert took <= 1.0, f"revoked device still connected after {took:.2f}s"


def test_a_connection_another_responder_admitted_is_kicked_too(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """Responders share the requests (a queue group): at each denylist change one also recalls the
    cluster's connections, so it kicks those another responder let in (here: forgotten on purpose)."""
    printer = connect(callout, clients, "other-printer", callout.add_device(rid, "other-printer", "tablet"))
    assert callout.responder is not None
    callout.call(_forget(callout.responder))
    callout.revoke(rid, "other-printer")
    wait_for(lambda: not printer.client.is_connected(), timeout=5)


async def _forget(responder: Responder) -> None:
    responder.admitted.clear()


def test_a_closed_connection_is_forgotten(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    """NATS's disconnect events keep the responder's list to the connections that exist."""
    client = connect(callout, clients, "brief-1", callout.mqtt_token("brief-1", "staff", rid))
    responder = callout.responder
    assert responder is not None
    known = lambda: any(entry.claims["sub"] == "brief-1" for entry in list(responder.admitted.values()))  # noqa: E731
    assert known()
    client.close()
    wait_for(lambda: not known(), timeout=5)


def test_a_reissued_token_ends_the_old_ones_connection(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    old = callout.add_device(rid, "re-tablet", "tablet")
    tablet = connect(callout, clients, "re-tablet", old)
    new = callout.reissue(rid, "re-tablet")
    wait_for(lambda: not tablet.client.is_connected(), timeout=5)
    tablet.close()
    assert refused(callout, "re-tablet", old) == NOT_AUTHORIZED
    connect(callout, clients, "re-tablet", new)


def test_a_token_ends_its_connection_at_expiry(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    token = callout.tokens.issue(sub="short-1", role="staff", rid=rid, audience="mqtt", ttl_seconds=3)
    exp = json.loads(nkeyjwt.b64url_decode(token.split(".")[1]))["exp"]
    client = connect(callout, clients, "short-1", token)
    wait_for(lambda: not client.client.is_connected(), timeout=10, interval=0.05)
    assert time.time() >= exp - 1, "disconnected before the token expired"
    client.close()
    assert not callout.connz(mqtt_client="short-1")["connections"]


def test_responder_down_means_nobody_gets_in(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    token = callout.mqtt_token("down-1", "admin", rid)
    callout.stop_responder()
    assert refused(callout, "down-1", token) == NOT_AUTHORIZED  # the server waits its auth timeout, then refuses
    callout.start_responder()
    connect(callout, clients, "down-1", token)


def test_the_responder_rides_out_a_nats_restart(callout: NatsCallout, clients: list[Subscriber], rid: int) -> None:
    """kill -9 of the node: the responder reconnects by itself and answers again once the node is back."""
    assert callout.server is not None
    callout.server.kill()
    callout.server.wait(10)
    callout.start_server()
    token = callout.mqtt_token("after-restart", "admin", rid)
    wait_for(lambda: refused(callout, "after-restart", token) == 0, timeout=20, interval=0.5)


def test_wrong_credentials_or_no_cluster_is_one_clear_error(callout: NatsCallout) -> None:
    wrong = Credentials(callout.credentials.issuer_seed, callout.credentials.auth_user, "not-the-password")
    for servers, credentials in ((callout.url, wrong), (f"nats://127.0.0.1:{free_port()}", callout.credentials)):
        responder = Responder(Decider(callout.tokens, callout.parts.policy, lambda _: False, wrong.issuer_seed))
        with pytest.raises(CalloutUnavailable, match=r"cannot connect to NATS at .* is the cluster up"):
            callout.call(responder.start(servers, credentials))


def cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    """`orderbus …` from this checkout (the venv's `orderbus` script may belong to another one)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def test_orderbus_responder_serves_the_node_and_stops_on_sigterm(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    callout.stop_responder()
    process = cli("responder", "--broker", callout.url, "--data-dir", str(callout.settings.data_dir))
    try:
        token = callout.mqtt_token("via-cli", "staff", rid)
        wait_for(lambda: refused(callout, "via-cli", token) == 0, timeout=20, interval=0.5)
        assert refused(callout, "someone", token) == NOT_AUTHORIZED
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors[-2000:]
    assert "Traceback" not in errors


def test_orderbus_responder_prints_the_block_the_nodes_run_with(callout: NatsCallout) -> None:
    printing = cli("responder", "--print-config", "--data-dir", str(callout.settings.data_dir))
    out, errors = printing.communicate(timeout=30)
    assert printing.returncode == 0, errors
    assert out.strip() == callout.block.strip()


def test_orderbus_responder_without_a_cluster_or_schema_says_so_in_one_line(
    callout: NatsCallout, tmp_path: Path
) -> None:
    nowhere = cli(
        "responder", "--broker", f"nats://127.0.0.1:{free_port()}", "--data-dir", str(callout.settings.data_dir)
    )
    _, errors = nowhere.communicate(timeout=30)
    assert nowhere.returncode == 2
    lines = [line for line in errors.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot connect to NATS" in lines[0], errors
    no_url = cli("responder", "--data-dir", str(callout.settings.data_dir))
    _, errors = no_url.communicate(timeout=30)
    assert no_url.returncode == 2 and "--broker" in errors and "Traceback" not in errors
    not_nats = cli("responder", "--broker", "mqtt://127.0.0.1:1883", "--data-dir", str(callout.settings.data_dir))
    _, errors = not_nats.communicate(timeout=30)
    assert not_nats.returncode == 2 and "is not a NATS URL" in errors and "Traceback" not in errors
    empty = cli("responder", "--broker", callout.url, "--data-dir", str(tmp_path / "empty"))
    _, errors = empty.communicate(timeout=30)
    assert empty.returncode == 2 and "orderbus db upgrade" in errors and "Traceback" not in errors


def test_a_plain_nats_client_is_refused(callout: NatsCallout, rid: int) -> None:
    before = decisions("client_type")

    async def attempt() -> None:
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises its own "Authorization Violation"
            await nats.connect(
                callout.url,
                user="x",
                password=callout.mqtt_token("x", "super_admin", None),
                max_reconnect_attempts=0,
                allow_reconnect=False,
                connect_timeout=3,
            )

    run_async(attempt())
    assert decisions("client_type") == before + 1


def test_only_the_server_may_ask_the_responder(callout: NatsCallout) -> None:
    """nats-server itself forbids publishing on the callout subject, even to the responder's own user:
    a forged request cannot reach the responder over the wire."""

    async def forge() -> None:
        connection = await nats.connect(
            callout.url, user=callout.credentials.auth_user, password=callout.credentials.auth_password
        )
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await connection.request(CALLOUT_SUBJECT, b"forged", timeout=1)
        finally:
            await connection.close()

    run_async(forge())  # never answered: the server alone may ask


def test_malformed_requests_are_refused_counted_and_survived(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """Junk handed to the running responder's handler (the way a message of the callout subscription
    arrives), a request whose signature does not verify among it: each is answered with a refusal over
    NATS, counted, and the responder goes on admitting good clients."""
    before = decisions("malformed_request")
    tampered = server_request(b"s", exp=None, tamper=True).decode()
    junk = [b"", b"garbage", b"a.b.c", b"\xff" * 64, tampered.encode()]
    responder = callout.responder
    assert responder is not None

    replies, _ = callout.call(_feed(callout, responder, junk, answers=len(junk)))
    assert replies[:4] == [b"", b"", b"", b""]  # no user key to address: an empty reply, which NATS reads as no
    refusal = nkeyjwt.decode(replies[4], issuer_role="account", kind="authorization_response")
    assert refusal["nats"]["error"] == "malformed_request" and "jwt" not in refusal["nats"]
    assert decisions("malformed_request") >= before + len(junk)
    connect(callout, clients, "after-junk", callout.mqtt_token("after-junk", "admin", rid))


def dropped() -> float:
    return REGISTRY.get_sample_value("orderbus_callout_dropped_total", {"reason": "expired"}) or 0.0


def server_request(seed_byte: bytes, *, exp: int | None, tamper: bool = False) -> bytes:
    """An authorization request as nats-server makes one, signed by a server key of our own."""
    server_seed = bytes(nkeyjwt.nkeys.encode_seed(seed_byte * 32, nkeyjwt.nkeys.PREFIX_BYTE_SERVER))
    request: dict[str, Any] = {
        "aud": "nats-authorization-request",
        "sub": "A",
        "nats": {
            "type": "authorization_request",
            "user_nkey": nkeyjwt.public_key_of(nkeyjwt.new_seed("user")),
            "server_id": {"id": nkeyjwt.public_key_of(server_seed)},
            "client_info": {"type": "mqtt", "mqtt_id": "late-1", "id": 1},
            "connect_opts": {"pass": "not-even-read"},
        },
    }
    if exp is not None:
        request["exp"] = exp
    signed = nkeyjwt.encode(request, server_seed)
    return (signed[: signed.rindex(".")] + ".AAAA" if tamper else signed).encode()


async def _feed(
    callout: NatsCallout, responder: Responder, requests: list[bytes], answers: int = 1
) -> tuple[list[bytes], int]:
    """Hand `requests` to the running responder's handler the way the callout subscription does (the
    server itself forbids anyone else to publish on that subject), with a reply inbox of our own; the
    first `answers` replies, and how many more were still pending after a round trip once those were in."""
    connection = await nats.connect(
        callout.url, user=callout.credentials.auth_user, password=callout.credentials.auth_password
    )
    try:
        inbox = connection.new_inbox()
        replies = await connection.subscribe(inbox)
        await connection.flush()
        for data in requests:
            await responder._on_request(
                Msg(_client=responder._callout, subject=CALLOUT_SUBJECT, reply=inbox, data=data)
            )
        got = [(await replies.next_msg(timeout=5)).data for _ in range(answers)]
        await responder._callout.flush()
        await connection.flush()
        return got, replies.pending_msgs
    finally:
        await connection.close()


def test_a_request_read_after_its_deadline_is_dropped_unanswered_and_counted(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """The server gives up on a login at the request's deadline (`exp`, whole seconds, plus at most the
    truncated second) and refuses it by itself: a request read later gets no answer (an answer would only
    delay the live ones behind it) and is counted as dropped, not as malformed. Replies go out in order,
    so the refusal of the bad request fed after it being the first and only reply shows none was sent."""
    responder = callout.responder
    assert responder is not None
    late = server_request(b"l", exp=int(time.time()) - 2)
    bad = server_request(b"b", exp=int(time.time()) + 60, tamper=True)
    dropped_before, malformed_before = dropped(), decisions("malformed_request")
    replies, pending = callout.call(_feed(callout, responder, [late, bad]))
    refusal = nkeyjwt.decode(replies[0], issuer_role="account", kind="authorization_response")
    assert refusal["nats"]["error"] == "malformed_request" and pending == 0
    assert dropped() == dropped_before + 1 and decisions("malformed_request") >= malformed_before + 1
    connect(callout, clients, "after-late", callout.mqtt_token("after-late", "admin", rid))


def test_several_responders_share_the_logins_in_one_process_or_as_processes(
    callout: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    """Responders are members of one queue group: a second one in this process (deciding in 3 worker
    threads) and an `orderbus responder --workers 2` process answer beside the first; each one alone
    admits, and a malformed request handed to a threaded one is refused, counted, and survived."""
    extra, revocations = callout.call(start_responder(callout.parts, callout.url, callout.credentials, workers=3))
    process = cli("responder", "--broker", callout.url, "--data-dir", str(callout.settings.data_dir), "--workers", "2")
    try:
        callout.stop_responder()  # the in-process threaded one and the process remain
        for n in range(4):
            connect(callout, clients, f"shared-{n}", callout.mqtt_token(f"shared-{n}", "staff", rid))
        before = decisions("malformed_request")
        replies, _pending = callout.call(_feed(callout, extra, [server_request(b"m", exp=None, tamper=True)]))
        assert nkeyjwt.decode(replies[0], issuer_role="account", kind="authorization_response")["nats"]["error"] == (
            "malformed_request"
        )
        assert decisions("malformed_request") >= before + 1
        callout.call(stop_responder(extra, revocations))  # now the process alone
        token = callout.mqtt_token("shared-process", "staff", rid)
        wait_for(lambda: refused(callout, "shared-process", token) == 0, timeout=20, interval=0.5)
    finally:
        callout.call(stop_responder(extra, revocations))
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
    assert process.returncode == 0 and "Traceback" not in errors, errors[-2000:]


def test_no_token_reaches_the_log(callout: NatsCallout, caplog: pytest.LogCaptureFixture, rid: int) -> None:
    caplog.set_level("INFO", logger="orderbus.callout")
    token = callout.mqtt_token("log-1", "admin", rid)
    refused(callout, "log-2", token)
    assert any("client_id_mismatch" in r.getMessage() for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)
