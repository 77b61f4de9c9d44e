"""The local NATS cluster (broker/nats/cluster.py) carries MQTT 3.1.1 the way the bus needs it: QoS 1 across
nodes, retained state served by every node, persistent sessions that outlive a kill -9 of their node,
MQTT over WebSocket at /mqtt (paho, and the dashboard's MQTT.js in Chromium); a wrong password is refused.
The command line around it: test_nats_cluster_cli.py.

Real nats-server 2.15.1 processes, real paho clients; one cluster for the module (each test its own topics)."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.client import ConnectFlags
from paho.mqtt.reasoncodes import ReasonCode
from playwright.sync_api import Browser

from broker.nats.cluster import Cluster
from scripts.ports import free_port
from tests.nats import client, running_cluster
from tests.support import Subscriber, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")
STATIC = Path(__file__).resolve().parents[2] / "api" / "static"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as started:
        yield started


@pytest.fixture
def clients() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for each in made:
        each.close()


def connected(clients: list[Subscriber], made: Subscriber) -> Subscriber:
    clients.append(made)
    assert made.connect() == 0
    return made


def publish(sender: Subscriber, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """QoS 1: returns once the node has acknowledged it (PUBACK), i.e. JetStream or the routes hold it."""
    info = sender.client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(10)
    assert info.is_published(), f"no PUBACK for {topic}"


def test_qos1_published_on_one_node_is_delivered_on_the_others(cluster: Cluster, clients: list[Subscriber]) -> None:
    """A QoS 1 message is delivered at least once [MQTT-4.3.2]; here exactly once, in order, on every node."""
    on_b = connected(clients, client(cluster, 1, "qos1-b"))
    on_c = connected(clients, client(cluster, 2, "qos1-c"))
    assert on_b.subscribe("restaurant/1/orders", qos=1) == 1
    assert on_c.subscribe("restaurant/+/orders", qos=1) == 1
    sender = connected(clients, client(cluster, 0, "qos1-a"))
    sent = [f"order-{n}".encode() for n in range(20)]
    for payload in sent:
        publish(sender, "restaurant/1/orders", payload)
    for receiver in (on_b, on_c):
        got = receiver.collect(20)
        assert [m.payload for m in got] == sent
        assert all(not m.retain for m in got)  # a live delivery carries RETAIN 0 [MQTT-3.3.1-9]
        assert receiver.drain() == []  # nothing twice


def test_retained_state_set_on_one_node_is_served_by_every_node(cluster: Cluster, clients: list[Subscriber]) -> None:
    """The node stores a retained message [MQTT-3.3.1-5] and a new subscription gets it with RETAIN 1
    [MQTT-3.3.1-6, MQTT-3.3.1-8], on any node and through wildcards; an empty payload removes it [MQTT-3.3.1-10]."""
    sender = connected(clients, client(cluster, 0, "retain-a"))
    publish(sender, "restaurant/2/orders/open/311", b'{"id": 311}', retain=True)
    publish(sender, "restaurant/2/inventory/items/5", b'{"available": 12}', retain=True)

    on_b = connected(clients, client(cluster, 1, "retain-b"))
    assert on_b.subscribe("restaurant/2/orders/open/+") == 1
    [open_order] = on_b.collect(1)
    assert (open_order.topic, open_order.payload, open_order.retain) == (
        "restaurant/2/orders/open/311",
        b'{"id": 311}',
        True,
    )

    on_c = connected(clients, client(cluster, 2, "retain-c"))
    assert on_c.subscribe("restaurant/2/#") == 1
    assert {(m.topic, m.retain) for m in on_c.collect(2)} == {
        ("restaurant/2/orders/open/311", True),
        ("restaurant/2/inventory/items/5", True),
    }
    on_a = connected(clients, client(cluster, 0, "retain-a2"))
    assert on_a.subscribe("restaurant/2/inventory/items/5") == 1
    assert [m.payload for m in on_a.collect(1)] == [b'{"available": 12}']

    publish(on_b, "restaurant/2/orders/open/311", b"", retain=True)  # the order closed: cleared, from another node
    assert [m.payload for m in on_c.collect(1)] == [b""]  # subscribers still get the clearing message itself
    later = connected(clients, client(cluster, 2, "retain-c2"))
    assert later.subscribe("restaurant/2/#") == 1
    assert [m.topic for m in later.collect(1)] == ["restaurant/2/inventory/items/5"]
    assert later.drain() == []  # the cleared open order is not served


def test_persistent_session_survives_kill_of_its_node(cluster: Cluster, clients: list[Subscriber]) -> None:
    """A printer's session (clean session 0, QoS 1) lives in JetStream, replicated: its node dies (kill -9),
    a ticket is published on another node meanwhile, and the printer, back on that other node with the
    same client id, finds its session [MQTT-3.2.2-2] and gets the ticket [MQTT-3.1.2-5], exactly once."""
    topic = "restaurant/3/kitchen/grill/tickets"
    printer = client(cluster, 0, "printer-3", clean_session=False)
    assert printer.connect() == 0
    assert printer.subscribe(topic, qos=1) == 1
    sender = connected(clients, client(cluster, 1, "kitchen-3"))
    publish(sender, topic, b"ticket-1")
    assert [m.payload for m in printer.collect(1)] == [b"ticket-1"]  # delivered and acknowledged before the crash

    printer.client.loop_stop()  # the printer notices nothing yet; its node dies under it
    cluster.kill(0)
    try:
        cluster.wait_ready()  # the two others agree on a JetStream leader without n1
        publish(sender, topic, b"ticket-2")

        present: list[bool] = []
        back = client(cluster, 1, "printer-3", clean_session=False)

        def on_connect(_c: object, _u: object, flags: ConnectFlags, reason: ReasonCode, _p: object) -> None:
            present.append(flags.session_present)
            back.connack.put(reason.value)

        back.client.on_connect = on_connect
        clients.append(back)
        assert back.connect() == 0
        assert present == [True]  # no SUBSCRIBE again: the session still has it
        assert [m.payload for m in back.collect(1)] == [b"ticket-2"]
        assert back.drain(quiet=1.5) == []  # ticket-1 was acknowledged, ticket-2 came once
    finally:
        printer.client.disconnect()
        cluster.restart(0)

    # The restarted node serves what was retained while it was dead.
    publish(sender, "restaurant/3/devices/printer-3/status", b"online", retain=True)
    on_a = connected(clients, client(cluster, 0, "status-a"))
    assert on_a.subscribe("restaurant/3/devices/+/status") == 1
    assert [(m.payload, m.retain) for m in on_a.collect(1)] == [(b"online", True)]


def test_mqtt_over_websocket_at_path_mqtt(cluster: Cluster, clients: list[Subscriber]) -> None:
    """What a browser dashboard (MQTT.js) does: MQTT over WebSocket, path /mqtt, to any node, both ways."""
    dashboard = connected(clients, client(cluster, 2, "dash-ws", transport="websockets"))
    assert dashboard.subscribe("restaurant/4/#") == 1
    tcp = connected(clients, client(cluster, 0, "tcp-4"))
    publish(tcp, "restaurant/4/orders", b"over tcp")
    assert [m.payload for m in dashboard.collect(1)] == [b"over tcp"]

    listener = connected(clients, client(cluster, 0, "tcp-4-listener"))
    assert listener.subscribe("restaurant/4/devices/+/events") == 1
    web = connected(clients, client(cluster, 1, "ws-4-sender", transport="websockets"))
    publish(web, "restaurant/4/devices/kds-1/events", b"bumped")
    assert [m.payload for m in listener.collect(1)] == [b"bumped"]


class _StaticFiles(http.server.SimpleHTTPRequestHandler):
    """api/static, plus an empty page at /blank.html: a page of that origin imports MQTT.js same-origin.
    (A page Playwright makes up itself has no address space, and Chromium's local-network-access check
    then refused its WebSocket to 127.0.0.1.)"""

    def do_GET(self) -> None:
        if self.path != "/blank.html":
            return super().do_GET()
        body = b"<!doctype html><title>MQTT.js</title>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_site() -> Iterator[str]:
    """The dashboard's static files over HTTP on loopback: where its MQTT.js comes from."""
    handler = functools.partial(_StaticFiles, directory=str(STATIC))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


MQTT_JS_CLIENT = """async ({url, password}) => {
  const mqtt = (await import('/vendor/mqtt.esm.js')).default;
  window.got = [];
  const client = mqtt.connect(url, {clientId: 'dev:tab-1', username: 'dev', password, clean: true,
                                    protocolVersion: 4, reconnectPeriod: 0, resubscribe: false,
                                    connectTimeout: 10000});
  client.on('message', (topic, payload, packet) =>
    window.got.push([topic, new TextDecoder().decode(payload), packet.retain]));
  await new Promise((resolve, reject) => {
    client.on('connect', resolve);
    client.on('error', reject);
    client.on('close', () => reject(new Error('closed before CONNACK')));
    setTimeout(() => reject(new Error('no CONNACK within 10 s')), 10000);
  });
  const granted = await new Promise((resolve, reject) => {
    client.subscribe('restaurant/5/#', {qos: 1}, (error, granted) => error ? reject(error) : resolve(granted));
    setTimeout(() => reject(new Error('no SUBACK within 10 s')), 10000);
  });
  window.mqttClient = client;
  return granted.map(g => g.qos);
}"""


def test_mqtt_js_in_chromium_over_websocket(
    cluster: Cluster, clients: list[Subscriber], browser: Browser, static_site: str
) -> None:
    """The dashboard's own MQTT.js (api/static/vendor) in Chromium, with the dashboard's options (MQTT 3.1.1,
    clean session, a ':' in the client id), to ws://node/mqtt: the retained state, then a live message."""
    sender = connected(clients, client(cluster, 0, "sender-5"))
    publish(sender, "restaurant/5/orders/open/9", b"open", retain=True)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{static_site}/blank.html")
        granted = page.evaluate(MQTT_JS_CLIENT, {"url": cluster.nodes[2].ws_url, "password": cluster.password})
        assert granted == [1]
        publish(sender, "restaurant/5/orders", b"live")
        got = wait_for(lambda: (seen := page.evaluate("window.got")) and len(seen) >= 2 and seen)
        assert got == [["restaurant/5/orders/open/9", "open", True], ["restaurant/5/orders", "live", False]]
        page.evaluate("window.mqttClient.end()")
    finally:
        context.close()


def test_wrong_password_is_refused(cluster: Cluster) -> None:
    """CONNACK return code 5, not authorized (MQTT 3.1.1 §3.2.2.3); paho reports it as MQTT 5's 135."""
    intruder = client(cluster, 0, "intruder", password="not-the-password")
    assert intruder.connect() == 135
