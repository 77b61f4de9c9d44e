"""Ops through the real stack: /metrics moves with real traffic, $SYS for ops only, /healthz and /readyz,
`orderbus status`, structured logs with no secret in them.

Counters are process-wide and the tests share one process, so every check is a difference
between a scrape before and a scrape after the traffic the test drives.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from core import logs
from scripts import raw_mqtt as raw
from tests.support import Stack, Subscriber, free_port, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")
NOT_AUTHORIZED = 135  # CONNACK 5 as paho reports it
SYS_PREFIX = "$SYS/broker/"


class Scrape:
    """One parsed /metrics: `value(name, **labels)` sums the samples whose labels match."""

    def __init__(self, text: str) -> None:
        self.text = text
        parsed = list(text_string_to_metric_families(text))
        self.families = {family.name for family in parsed}
        self.types = {family.name: family.type for family in parsed}
        self.samples = [
            (sample.name, dict(sample.labels), sample.value) for family in parsed for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.samples if n == name and all(lab.get(k) == w for k, w in labels.items()))

    def labels(self, name: str) -> list[dict[str, str]]:
        return [lab for n, lab, _ in self.samples if n == name]


def scrape(stack: Stack) -> Scrape:
    response = httpx.get(f"{stack.base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def eventually(stack: Stack, check, timeout: float = 10.0) -> Scrape:
    """Scrape until `check(scrape)` holds."""
    last: list[Scrape] = []

    def attempt() -> bool:
        last[:] = [scrape(stack)]
        return bool(check(last[0]))

    try:
        wait_for(attempt, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"metrics never satisfied the check; last scrape:\n{last[0].text[-3000:]}") from None
    return last[0]


@pytest.fixture
def bistro(stack: Stack):
    """A restaurant with a logged-in admin and a burger on the menu."""
    rid = stack.add_restaurant("Ops Bistro", "ops@example.com")
    login = stack.http().post("/auth/login", json={"email": "ops@example.com", "password": "secret-pass"})
    assert login.status_code == 200, login.text
    admin = stack.http(login.json()["access_token"])
    menu = admin.post(f"/restaurants/{rid}/menus", json={"name": "Main"})
    assert menu.status_code == 201, menu.text
    burger = admin.post(
        f"/restaurants/{rid}/menu-items", json={"menu_id": menu.json()["id"], "name": "Burger", "price_cents": 1200}
    )
    assert burger.status_code == 201, burger.text
    return {"rid": rid, "admin": admin, "burger": burger.json()["id"], "admin_token": login.json()["access_token"]}


def order(bistro) -> dict:
    response = bistro["admin"].post(
        f"/restaurants/{bistro['rid']}/orders", json={"items": [{"menu_item_id": bistro["burger"], "quantity": 1}]}
    )
    assert response.status_code == 201, response.text
    return response.json()


def subscriber(stack: Stack, made: list[Subscriber], sub: str, role: str, rid: int | None, **extra) -> Subscriber:
    client = Subscriber(stack.settings.mqtt_port, sub, stack.mqtt_token(sub, role, rid, **extra))
    made.append(client)
    assert client.connect() == 0
    return client


def expired_token(stack: Stack, sub: str, role: str, rid: int | None) -> str:
    """Signed with the deployment's key, expired a minute ago (the token service refuses to issue one)."""
    now = int(time.time())
    claims = {"sub": sub, "role": role, "rid": rid, "iat": now - 120, "exp": now - 60, "jti": "x" * 32, "aud": "mqtt"}
    return jwt.encode(claims, stack.parts.tokens.key, algorithm="HS256")


def set_sys_interval(stack: Stack, seconds: float) -> None:
    assert stack.runtime.broker is not None
    plugin = stack.runtime.broker.plugins_manager.get_plugin("MetricsPlugin")
    stack.loop.call_soon_threadsafe(plugin.set_interval, seconds)


# --- /metrics ----------------------------------------------------------------------------------

EVERY_FAMILY = {  # family names: a counter's samples carry `_total`, a histogram's `_bucket`, `_sum`, `_count`
    "orderbus_broker_connections",
    "orderbus_broker_connects",
    "orderbus_broker_disconnects",
    "orderbus_broker_auth_failures",
    "orderbus_broker_acl_denials",
    "orderbus_broker_messages_received",
    "orderbus_broker_messages_sent",
    "orderbus_broker_bytes_received",
    "orderbus_broker_bytes_sent",
    "orderbus_broker_retained_messages",
    "orderbus_broker_dropped_messages",
    "orderbus_broker_client_queue_max",
    "orderbus_outbox_pending",
    "orderbus_outbox_oldest_age_seconds",
    "orderbus_relay_publish_seconds",
    "orderbus_ingest_processed",
    "orderbus_ingest_rejected",
    "orderbus_tickets",
    "orderbus_devices",
    "orderbus_http_request_duration_seconds",
    "orderbus_broker_up",
    "orderbus_database_up",
}


def test_metrics_has_every_family_the_issue_lists(stack: Stack, bistro, subscribers):
    subscriber(stack, subscribers, "watcher", "staff", bistro["rid"])
    order(bistro)
    # refusals and ingest outcomes exist once something was refused or applied
    bad = Subscriber(stack.settings.mqtt_port, "intruder", "not-a-token")
    assert bad.connect() == NOT_AUTHORIZED
    metrics = eventually(stack, lambda s: s.value("orderbus_relay_events_published_total") >= 1)
    missing = EVERY_FAMILY - metrics.families
    assert not missing, missing
    assert metrics.types["orderbus_relay_publish_seconds"] == "histogram"
    assert metrics.types["orderbus_http_request_duration_seconds"] == "histogram"
    assert {lab["cause"] for lab in metrics.labels("orderbus_broker_dropped_messages_total")} >= {
        "queue_full",
        "rate_limit",
        "size",
    }
    assert {lab["outcome"] for lab in metrics.labels("orderbus_tickets_total")} == {
        "printed",
        "failed",
        "unacknowledged",
    }
    assert metrics.value("orderbus_broker_up") == 1 and metrics.value("orderbus_database_up") == 1
    assert metrics.value("orderbus_broker_connections", role="staff", listener="tcp") == 1
    assert metrics.value("orderbus_broker_connections", role="service", listener="tcp") == 2  # relay and ingest
    assert "_created" not in metrics.text


def test_a_refused_subscribe_raises_the_denial_counter(stack: Stack, bistro, subscribers):
    watcher = subscriber(stack, subscribers, "watcher", "staff", bistro["rid"])
    before = scrape(stack).value("orderbus_broker_acl_denials_total", action="subscribe", role="staff")
    assert watcher.subscribe("#") == 0x80
    assert watcher.subscribe(f"restaurant/{bistro['rid'] + 1}/#") == 0x80
    after = scrape(stack).value("orderbus_broker_acl_denials_total", action="subscribe", role="staff")
    assert after - before == 2


def test_auth_failures_are_counted_by_reason(stack: Stack, bistro):
    before = scrape(stack)
    expired = expired_token(stack, "late", "staff", bistro["rid"])
    for client_id, token in (("nobody", "garbage"), ("late", expired)):
        assert Subscriber(stack.settings.mqtt_port, client_id, token).connect() == NOT_AUTHORIZED
    after = scrape(stack)
    assert after.value("orderbus_broker_auth_failures_total") - before.value("orderbus_broker_auth_failures_total") == 2
    reasons = {lab["reason"] for lab in after.labels("orderbus_broker_auth_failures_total")}
    assert len(reasons) >= 2, reasons


def test_connections_by_role_and_listener_and_connects_and_disconnects(stack: Stack, bistro):
    rid = bistro["rid"]
    before = scrape(stack)
    tcp = Subscriber(stack.settings.mqtt_port, "dash-1", stack.mqtt_token("dash-1", "admin", rid))
    assert tcp.connect() == 0
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    ws = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dash-2", transport="websockets", protocol=mqtt.MQTTv311)
    ws.ws_set_options(path="/mqtt")
    ws.username_pw_set("dash-2", stack.mqtt_token("dash-2", "admin", rid))
    ws.connect("127.0.0.1", stack.settings.ws_port, keepalive=30)
    ws.loop_start()
    try:
        now = eventually(
            stack, lambda s: s.value("orderbus_broker_connections", role="admin", listener="ws") == 1, timeout=10
        )
        assert now.value("orderbus_broker_connections", role="admin", listener="tcp") == 1
        connects = now.value("orderbus_broker_connects_total", role="admin") - before.value(
            "orderbus_broker_connects_total", role="admin"
        )
        assert connects == 2
    finally:
        tcp.close()
        ws.disconnect()
        ws.loop_stop()
    after = eventually(stack, lambda s: s.value("orderbus_broker_connections", role="admin") == 0)
    clean = after.value("orderbus_broker_disconnects_total", role="admin", reason="client") - before.value(
        "orderbus_broker_disconnects_total", role="admin", reason="client"
    )
    assert clean == 2


def test_messages_bytes_relay_latency_and_retained_move_with_orders(stack: Stack, bistro, subscribers):
    watcher = subscriber(stack, subscribers, "watcher", "staff", bistro["rid"])
    assert watcher.subscribe(f"restaurant/{bistro['rid']}/orders") != 0x80
    before = scrape(stack)
    for _ in range(3):
        order(bistro)
    watcher.collect(3)
    after = eventually(
        stack,
        lambda s: (
            s.value("orderbus_relay_events_published_total") - before.value("orderbus_relay_events_published_total")
            >= 3
        ),
    )

    def grew(name: str) -> float:
        return after.value(name) - before.value(name)

    assert grew("orderbus_broker_messages_received_total") >= 3  # the relay's publishes
    assert grew("orderbus_broker_messages_sent_total") >= 3  # to the watcher
    assert grew("orderbus_broker_bytes_received_total") > 3 * 100
    assert grew("orderbus_broker_bytes_sent_total") > 3 * 100
    assert grew("orderbus_relay_publish_seconds_count") >= 3
    assert after.value("orderbus_broker_retained_messages") >= 3  # the open orders
    assert after.value("orderbus_outbox_pending") == 0


def test_http_latency_is_labelled_with_the_route_template_not_the_path(stack: Stack, bistro):
    rid = bistro["rid"]
    bistro["admin"].get(f"/restaurants/{rid}/orders")
    httpx.get(f"{stack.base_url}/no/such/page/12345")
    metrics = scrape(stack)
    routes = {lab["route"] for lab in metrics.labels("orderbus_http_request_duration_seconds_count")}
    assert "/api/v1/restaurants/{restaurant_id}/orders" in routes
    assert "unmatched" in routes
    assert not any(str(rid) in route.split("/") or "12345" in route for route in routes), routes
    assert metrics.value("orderbus_http_requests_total", route="unmatched", status="404") >= 1


# --- outbox lag and readiness ------------------------------------------------------------------


def test_a_stopped_broker_grows_the_outbox_lag_and_fails_readiness_until_it_returns(stack: Stack, bistro):
    stack.settings.ready_max_outbox_lag_seconds = 1.0
    ready = httpx.get(f"{stack.base_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"

    stack.call(stack.runtime.stop_broker())
    try:
        down = httpx.get(f"{stack.base_url}/readyz", timeout=10)
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "not ready" and "broker" in body["failed"]
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["broker"]["error"]
        for _ in range(2):
            order(bistro)  # the API keeps taking orders: they wait in the outbox
        lagging = eventually(
            stack,
            lambda s: s.value("orderbus_outbox_pending") >= 2 and s.value("orderbus_outbox_oldest_age_seconds") > 1.5,
        )
        assert lagging.value("orderbus_broker_up") == 0
        later = eventually(
            stack,
            lambda s: (
                s.value("orderbus_outbox_oldest_age_seconds") > lagging.value("orderbus_outbox_oldest_age_seconds")
            ),
        )
        assert later.value("orderbus_outbox_pending") >= 2
        relay = httpx.get(f"{stack.base_url}/readyz", timeout=10).json()
        assert set(relay["failed"]) == {"broker", "listeners", "relay"}  # the WebSocket listener stopped too
        assert relay["checks"]["relay"]["pending"] >= 2 and "threshold" in relay["checks"]["relay"]["error"]
    finally:
        stack.call(stack.runtime.start_broker())

    recovered = eventually(stack, lambda s: s.value("orderbus_outbox_pending") == 0, timeout=20)
    assert recovered.value("orderbus_outbox_oldest_age_seconds") == 0 and recovered.value("orderbus_broker_up") == 1
    wait_for(lambda: httpx.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200, timeout=10)
    assert httpx.get(f"{stack.base_url}/readyz", timeout=10).json()["failed"] == []


def test_healthz_is_alive_and_readyz_reports_a_broken_database(stack: Stack):
    health = httpx.get(f"{stack.base_url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    server = stack.runtime._api_server
    assert server is not None
    app = server.config.app
    assert isinstance(app, FastAPI)  # the app itself, no wrapper: its state holds the engine
    engine = app.state.engine
    app.state.engine = create_engine(f"sqlite:///{stack.settings.data_dir}/no/such/dir/db.sqlite")
    try:
        response = httpx.get(f"{stack.base_url}/readyz", timeout=10)
        assert response.status_code == 503
        body = response.json()
        assert {"database", "relay"} <= set(body["failed"]) and "broker" not in body["failed"]
        assert body["checks"]["database"]["error"].startswith("OperationalError")
        metrics = scrape(stack)  # still answers, and says the database is down
        assert metrics.value("orderbus_database_up") == 0 and metrics.value("orderbus_broker_up") == 1
        summary = httpx.get(f"{stack.base_url}/api/v1/ops/summary").json()
        assert summary["database_up"] is False
    finally:
        app.state.engine = engine
    assert httpx.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def probed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack for the bad requests below: they write nothing, so one start serves them all."""
    running = Stack(tmp_path_factory.mktemp("probed") / "data").start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics?name[]=x&format=%00"),
        ("GET", "/readyz?verbose=%ff%fe"),
        ("POST", "/metrics"),
        ("POST", "/readyz"),
        ("GET", "/metrics/../../etc/passwd"),
        ("GET", "/ops/../../api/metrics.py"),
        ("GET", "/ops/ops.html%00.js"),
        ("GET", "/api/v1/ops/summary?x=" + "y" * 5000),
    ],
)
def test_bad_requests_to_ops_endpoints_never_crash(probed_stack: Stack, method: str, path: str):
    response = httpx.request(method, probed_stack.base_url + path, timeout=10)
    assert response.status_code in (200, 404, 405, 503), response.text
    assert "Traceback" not in response.text


def test_the_readiness_probe_is_a_real_mqtt_connect(stack: Stack):
    before = scrape(stack).value("orderbus_broker_connects_total", role="ops")
    assert httpx.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200
    after = eventually(stack, lambda s: s.value("orderbus_broker_connects_total", role="ops") > before)
    assert after.value("orderbus_broker_connects_total", role="ops") - before == 1
    # and it leaves cleanly: DISCONNECT, not a dropped connection
    eventually(stack, lambda s: s.value("orderbus_broker_connections", role="ops") == 0)


# --- devices -----------------------------------------------------------------------------------


def test_a_killed_device_counts_as_lost_once_ingest_applies_its_last_will(stack: Stack, bistro):
    rid = bistro["rid"]
    created = bistro["admin"].post(
        f"/restaurants/{rid}/devices",
        json={"id": "printer-ops-1", "kind": "printer", "name": "Grill", "station": "grill"},
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    status_topic = f"restaurant/{rid}/devices/printer-ops-1/status"
    before = scrape(stack)
    assert before.value("orderbus_devices", kind="printer", presence="unknown") >= 1

    sock = raw.open_socket(stack.settings.mqtt_port)
    sock.sendall(
        raw.connect("printer-ops-1", token, keepalive=1, clean=False, will=(status_topic, b'{"state": "lost"}', True))
    )
    assert raw.connack_code(sock) == 0
    sock.sendall(raw.publish(status_topic, b'{"state": "online"}', qos=1, retain=True, packet_id=1))
    online = eventually(stack, lambda s: s.value("orderbus_devices", kind="printer", presence="online") >= 1)
    online_count = online.value("orderbus_devices", kind="printer", presence="online")
    assert online.value("orderbus_broker_connections", role="printer", listener="tcp") == 1

    # killed: the socket is reset, no DISCONNECT; the broker publishes the Will, ingest records it
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    lost = eventually(
        stack,
        lambda s: (
            s.value("orderbus_devices", kind="printer", presence="lost")
            > before.value("orderbus_devices", kind="printer", presence="lost")
        ),
    )
    assert lost.value("orderbus_devices", kind="printer", presence="online") == online_count - 1
    assert lost.value("orderbus_broker_connections", role="printer") == 0
    processed = lost.value("orderbus_ingest_processed_total", kind="status") - before.value(
        "orderbus_ingest_processed_total", kind="status"
    )
    assert processed >= 2  # online, then lost
    dropped = lost.value("orderbus_broker_disconnects_total", role="printer", reason="lost") - before.value(
        "orderbus_broker_disconnects_total", role="printer", reason="lost"
    )
    assert dropped == 1


def test_a_silent_device_is_lost_after_its_keepalive(stack: Stack, bistro):
    """The same through the broker's keepalive: the socket stays open, the device just stops talking."""
    rid = bistro["rid"]
    created = bistro["admin"].post(
        f"/restaurants/{rid}/devices", json={"id": "scale-ops-1", "kind": "scale", "name": "Flour"}
    )
    assert created.status_code == 201, created.text
    status_topic = f"restaurant/{rid}/devices/scale-ops-1/status"
    before = scrape(stack).value("orderbus_devices", kind="scale", presence="lost")
    sock = raw.open_socket(stack.settings.mqtt_port)
    try:
        will = (status_topic, b'{"state": "lost"}', True)
        sock.sendall(raw.connect("scale-ops-1", created.json()["token"], keepalive=1, will=will))
        assert raw.connack_code(sock) == 0
        eventually(stack, lambda s: s.value("orderbus_devices", kind="scale", presence="lost") > before, timeout=15)
    finally:
        sock.close()


# --- $SYS --------------------------------------------------------------------------------------


def test_sys_topics_reach_ops_and_nobody_else(stack: Stack, bistro, subscribers):
    set_sys_interval(stack, 0.2)
    rid = bistro["rid"]
    ops = subscriber(stack, subscribers, "ops-1", "ops", None)
    admin = subscriber(stack, subscribers, "admin-1", "admin", rid)
    boss = subscriber(stack, subscribers, "boss-1", "super_admin", None)
    for refused in (admin, boss):
        for topic_filter in ("$SYS/#", "$SYS/broker/clients/connected", "#", "+/broker/#"):
            assert refused.subscribe(topic_filter) == 0x80, topic_filter
    assert ops.subscribe("$SYS/#", qos=0) == 0
    wanted = {
        "version",
        "uptime",
        "clients/connected",
        "clients/total",
        "messages/received",
        "messages/sent",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "bytes/received",
        "bytes/sent",
        "retained messages/count",
        "subscriptions/count",
        "store/messages/count",
        "orderbus/auth/failures",
        "orderbus/acl/denials",
        "orderbus/clients/ops",
        "orderbus/queue/deepest",
    }
    got: dict[str, bytes | bytearray] = {}
    deadline = time.monotonic() + 10

    def fresh() -> bool:  # the first values are the retained ones, from before these clients came
        return wanted <= got.keys() and int(got["orderbus/clients/ops"]) == 1 and int(got["clients/connected"]) >= 5

    while time.monotonic() < deadline and not fresh():
        for message in ops.collect(1):
            assert message.topic.startswith(SYS_PREFIX), message.topic
            got[message.topic.removeprefix(SYS_PREFIX)] = message.payload
    assert wanted <= got.keys(), sorted(wanted - got.keys())
    assert int(got["clients/connected"]) >= 5  # relay, ingest, ops, admin, boss
    assert int(got["orderbus/clients/ops"]) == 1
    assert int(got["orderbus/acl/denials"]) >= 8
    assert got["uptime"].endswith(b" seconds")

    # Delivery is checked too: even a $SYS subscription slipped into the broker's table behind the
    # ACL's back (as if a bug let it through) delivers nothing to an admin.
    broker = stack.runtime.broker
    assert broker is not None
    session = broker.sessions["admin-1"][0]
    before = scrape(stack).value("orderbus_broker_acl_denials_total", role="admin")

    async def smuggle() -> None:
        broker._subscriptions.setdefault("$SYS/#", []).append((session, 0))

    stack.call(smuggle())
    time.sleep(1.0)
    assert admin.drain(quiet=0.5) == []
    assert boss.drain(quiet=0.1) == []
    assert scrape(stack).value("orderbus_broker_acl_denials_total", role="admin") > before


# --- orderbus status ---------------------------------------------------------------------------


def test_status_once_prints_the_figures_of_a_running_stack(stack: Stack, bistro, subscribers):
    subscriber(stack, subscribers, "watcher", "staff", bistro["rid"])
    order(bistro)
    eventually(
        stack,
        lambda s: s.value("orderbus_outbox_pending") == 0 and s.value("orderbus_relay_events_published_total") > 0,
    )
    result = subprocess.run(
        [ORDERBUS, "status", "--url", stack.base_url, "--once"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for label in ("broker", "database", "connections", "messages in", "messages out", "outbox", "relay", "devices"):
        assert label in out, (label, out)
    connections = next(line for line in out.splitlines() if line.startswith("connections"))
    assert "staff 1" in connections and "service 2" in connections, connections
    assert "0 pending" in out
    # a /metrics URL works as well as the base URL
    again = subprocess.run(
        [ORDERBUS, "status", "--url", f"{stack.base_url}/metrics", "--once"], capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 0 and "connections" in again.stdout


class _NotOrderbus(BaseHTTPRequestHandler):
    """/html/metrics answers a web page; /other/metrics answers Prometheus text of some other program."""

    def do_GET(self) -> None:
        body = b"<html>hello</html>" if self.path.startswith("/html") else b"# TYPE other_up gauge\nother_up 1\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def not_orderbus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotOrderbus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:{closed}", "cannot reach"),
        ("ftp://127.0.0.1/metrics", "not an http(s) URL"),
        ("http://[::1", "not a usable URL"),
        ("http://", "not a usable URL"),
        ("{base}/healthz", "HTTP 404"),
        ("{other}/html", "did not return Prometheus metrics"),
        ("{other}/other/metrics", "no orderbus metrics"),
    ],
)
def test_status_with_a_bad_url_exits_1_with_one_clear_line(stack: Stack, not_orderbus: str, url: str, expected: str):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    target = url.format(closed=closed, base=stack.base_url, other=not_orderbus)
    result = subprocess.run([ORDERBUS, "status", "--url", target, "--once"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("orderbus: error:") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_the_summary_endpoint_has_what_the_page_draws(stack: Stack, bistro, subscribers):
    subscriber(stack, subscribers, "watcher", "staff", bistro["rid"])
    summary = httpx.get(f"{stack.base_url}/api/v1/ops/summary").json()
    assert summary["connections"]["by_role"]["staff"] == 1
    assert summary["broker_up"] is True and summary["database_up"] is True
    assert set(summary["outbox"]) == {"pending", "oldest_age_seconds"}
    assert {"received", "sent", "bytes_received", "bytes_sent"} <= set(summary["messages"])
    assert set(summary["tickets"]) == {"printed", "failed", "unacknowledged"}
    assert set(summary["devices"]) >= {"printer", "tablet", "scale"}


# --- logs --------------------------------------------------------------------------------------


@pytest.fixture
def captured_logs():
    """Everything logged anywhere in the process at DEBUG, through orderbus's JSON handler."""
    stream = io.StringIO()
    handler = logs.handler(json_lines=True, stream=stream)
    root = logging.getLogger()
    noisy = {name: logging.getLogger(name).level for name in (*logs.NOISY, "amqtt.broker", "orderbus")}
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in noisy:
        logging.getLogger(name).setLevel(logging.DEBUG)
    records: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        records.append(record)
        return True

    handler.addFilter(keep)  # after RedactSecrets: what is emitted
    yield stream, records
    root.removeHandler(handler)
    root.setLevel(previous)
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


def test_no_token_password_or_key_reaches_a_log_line(stack: Stack, captured_logs):
    stream, records = captured_logs
    password = "correct-horse-battery-staple-42"
    rid = stack.add_restaurant("Log Bistro", "log@example.com", password=password)
    secrets: list[str] = [password, stack.parts.tokens.key.decode()]

    login = stack.http().post("/auth/login", json={"email": "log@example.com", "password": password})
    assert login.status_code == 200
    api_token = login.json()["access_token"]
    secrets.append(api_token)
    wrong = stack.http().post("/auth/login", json={"email": "log@example.com", "password": password + "-wrong"})
    assert wrong.status_code == 401
    secrets.append(password + "-wrong")
    admin = stack.http(api_token)
    mqtt_token = admin.post("/auth/mqtt-token").json()["token"]
    secrets.append(mqtt_token)
    menu = admin.post(f"/restaurants/{rid}/menus", json={"name": "Main"}).json()
    item = admin.post(
        f"/restaurants/{rid}/menu-items", json={"menu_id": menu["id"], "name": "Soup", "price_cents": 500}
    )
    device = admin.post(f"/restaurants/{rid}/devices", json={"id": "tablet-log-1", "kind": "tablet", "name": "KDS"})
    assert device.status_code == 201
    device_token = device.json()["token"]
    secrets.append(device_token)
    for _ in range(2):
        assert (
            admin.post(
                f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": item.json()["id"], "quantity": 1}]}
            ).status_code
            == 201
        )

    good = Subscriber(stack.settings.mqtt_port, "user-1:tab", mqtt_token)
    assert good.connect() == 0
    assert good.subscribe("#") == 0x80
    good.close()
    tablet = Subscriber(stack.settings.mqtt_port, "tablet-log-1", device_token)
    assert tablet.connect() == 0
    tablet.close()
    forged = mqtt_token[:-4] + ("AAAA" if not mqtt_token.endswith("AAAA") else "BBBB")
    expired = expired_token(stack, "late", "staff", rid)
    garbage = "hunter2-not-a-jwt-at-all"
    secrets += [forged, expired, garbage]
    for client_id, token in (("user-1", forged), ("late", expired), ("nobody", garbage), ("thief", device_token)):
        assert Subscriber(stack.settings.mqtt_port, client_id, token).connect() == NOT_AUTHORIZED
    sock = raw.open_socket(stack.settings.mqtt_port)
    sock.sendall(raw.connect("raw-bad", api_token))  # an API token at the broker: refused
    assert raw.connack_code(sock) == 5
    sock.close()
    assert httpx.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200  # the probe's own token
    time.sleep(0.5)

    output = stream.getvalue()
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) > 20, output[-2000:]
    for secret in secrets:
        assert secret not in output
        for record in records:
            assert secret not in record.getMessage()
            assert all(secret not in str(value) for value in record.__dict__.values())
    parsed = [json.loads(line) for line in lines]
    # our own code never had to be redacted: the filter is the last line, not the first
    assert not [r.getMessage() for r in records if r.name.startswith("orderbus") and getattr(r, "redacted", False)]

    connects = [p for p in parsed if p.get("event") == "connect" and p.get("client_id") == "tablet-log-1"]
    assert connects and connects[0]["role"] == "tablet" and connects[0]["restaurant"] == rid
    refusals = [p for p in parsed if p.get("event") == "connect_refused"]
    reasons = {p.get("reason") for p in refusals}
    assert reasons >= {"bad_signature", "expired", "malformed", "client_id_mismatch", "wrong_audience"}, reasons
    assert all("client_id" in p and "reason" in p for p in refusals)
    disconnects = [p for p in parsed if p.get("event") == "disconnect" and p.get("client_id") == "tablet-log-1"]
    assert disconnects and disconnects[0]["reason"] == "client" and disconnects[0]["role"] == "tablet"
    assert disconnects[0]["restaurant"] == rid


# --- a process without the API: --log-json, ORDERBUS_METRICS_PORT ------------------------------


@pytest.mark.e2e
def test_a_broker_alone_logs_json_and_serves_metrics_on_its_own_port(tmp_path):
    mqtt_port, ws_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "ORDERBUS_METRICS_PORT": str(metrics_port)}
    log = tmp_path / "broker.log"
    subprocess.run([ORDERBUS, "db", "upgrade", "--data-dir", str(tmp_path / "data")], check=True)  # parts never do
    args = [ORDERBUS, "broker", "--log-json", "--data-dir", str(tmp_path / "data")]
    args += ["--mqtt-port", str(mqtt_port), "--ws-port", str(ws_port)]
    with log.open("w") as sink:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink, env=env, text=True)
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        def answering() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        wait_for(answering, timeout=30)
        assert process.poll() is None, log.read_text()
        key = (tmp_path / "data" / "jwt.key").read_bytes().strip()
        now = int(time.time())
        claims = {
            "sub": "tab-1",
            "role": "tablet",
            "rid": 3,
            "iat": now,
            "exp": now + 60,
            "jti": "j" * 32,
            "aud": "mqtt",
        }
        good = jwt.encode(claims, key, algorithm="HS256")
        tablet = Subscriber(mqtt_port, "tab-1", good)
        assert tablet.connect() == 0
        assert Subscriber(mqtt_port, "tab-2", good).connect() == NOT_AUTHORIZED  # client id is not the token's sub
        metrics = Scrape(httpx.get(url).text)
        assert metrics.value("orderbus_broker_up") == 1
        assert metrics.value("orderbus_broker_auth_failures_total", reason="client_id_mismatch") == 1
        assert metrics.value("orderbus_database_up") == 1
        status = subprocess.run(
            [ORDERBUS, "status", "--url", f"127.0.0.1:{metrics_port}", "--once"], capture_output=True, text=True
        )
        assert status.returncode == 0 and "auth failures  client_id_mismatch 1" in status.stdout, status.stdout
        tablet.close()
        wait_for(lambda: Scrape(httpx.get(url).text).value("orderbus_broker_connections") == 0)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, log.read_text()
    connect = next(line for line in lines if line.get("event") == "connect")
    assert (connect["client_id"], connect["role"], connect["restaurant"], connect["level"]) == (
        "tab-1",
        "tablet",
        3,
        "INFO",
    )
    refused = next(line for line in lines if line.get("event") == "connect_refused")
    assert (refused["client_id"], refused["reason"]) == ("tab-2", "client_id_mismatch")
    gone = next(line for line in lines if line.get("event") == "disconnect" and line.get("client_id") == "tab-1")
    assert (gone["role"], gone["restaurant"], gone["reason"]) == ("tablet", 3, "client")
    assert good not in log.read_text()


def test_status_without_once_keeps_refreshing_until_interrupted(stack: Stack):
    def scrapes() -> float:  # this process's own counter: the stack runs in it
        labels = {"method": "GET", "route": "/metrics", "status": "200"}
        return REGISTRY.get_sample_value("orderbus_http_requests_total", labels) or 0.0

    before = scrapes()
    process = subprocess.Popen(
        [ORDERBUS, "status", "--url", stack.base_url, "--interval", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal: a test run started as a background job ignores SIGINT, and a child
        # would inherit that (Python then installs no KeyboardInterrupt handler and SIGINT does nothing)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(lambda: scrapes() >= before + 3 or process.poll() is not None, timeout=60)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    # off a terminal rich prints the last frame only; its rates need two scrapes, so it is a refresh
    assert "orderbus status" in out and "/s)" in out and "(n/a)" not in out, out
