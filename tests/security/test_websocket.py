"""MQTT over WebSocket: served at /mqtt only, with the same packet size limit as TCP.

The first and third tests run on NATS too (`broker` is parametrised, tests/security/conftest.py): there
the WebSocket listener answers any path, but only `/mqtt` speaks MQTT; elsewhere it is the NATS protocol,
where an MQTT CONNECT is a parse error (and a NATS client still has to get past the callout)."""

from __future__ import annotations

import inspect
import time

import pytest
import websockets

from broker.stats import REFUSED_CONNECTIONS
from tests.security.checks import on_nats, watch_qos
from tests.support import Subscriber, wait_for

WS_DEFAULT_PING_SECONDS: float = inspect.signature(websockets.serve).parameters["ping_interval"].default


def ws_client(broker, client_id: str, path: str, role: str = "admin", rid: int | None = 7) -> Subscriber:
    subscriber = Subscriber(broker.ws_port, client_id, broker.token(client_id, role, rid), transport="websockets")
    subscriber.client.ws_set_options(path=path)
    return subscriber


def test_websocket_clients_connect_at_mqtt_path(broker):
    dashboard = ws_client(broker, "dash", "/mqtt")
    assert dashboard.connect() == 0
    qos = watch_qos(broker)
    assert dashboard.subscribe(broker.topic("restaurant/7/orders"), qos=qos) == qos
    assert dashboard.subscribe(broker.topic("restaurant/8/orders"), qos=qos) == 0x80  # the same grants as TCP
    bus = Subscriber(broker.port, "svc", broker.token("svc", "service", None))
    assert bus.connect() == 0
    bus.client.publish(broker.topic("restaurant/8/orders"), b"elsewhere", qos=1).wait_for_publish(5)
    bus.client.publish(broker.topic("restaurant/7/orders"), b"hello", qos=1).wait_for_publish(5)
    assert dashboard.collect(1)[0].payload == b"hello"
    for client in (dashboard, bus):
        client.close()


@pytest.mark.embedded_only("the embedded listener's websockets ping interval; NATS sends no WebSocket pings")
def test_a_paho_websocket_client_stays_connected_past_the_websocket_ping_interval(broker):
    """paho answers WebSocket pings with unmasked pongs; with server pings on, it was dropped after 20 s."""
    dashboard = ws_client(broker, "dash", "/mqtt")
    assert dashboard.connect() == 0
    assert dashboard.subscribe("restaurant/7/orders") == 1
    time.sleep(WS_DEFAULT_PING_SECONDS + 1.5)  # just past the first ping a server would send: time is the subject
    bus = Subscriber(broker.port, "svc", broker.token("svc", "service", None))
    assert bus.connect() == 0
    bus.client.publish("restaurant/7/orders", b"still here", qos=1).wait_for_publish(5)
    assert dashboard.collect(1)[0].payload == b"still here"
    assert dashboard.connack.empty()  # no reconnect happened in between
    for client in (dashboard, bus):
        client.close()


@pytest.mark.parametrize("path", ["/", "/mqttx", "/ws"])
def test_other_paths_are_refused(broker, path):
    """Embedded: the handshake is refused (404), counted. NATS completes the handshake on any path, but off
    `/mqtt` the connection speaks the NATS protocol: the MQTT CONNECT is a protocol error and the node closes
    the connection. On both, no CONNACK."""
    before = REFUSED_CONNECTIONS.labels(reason="ws_path")._value.get()
    stray = ws_client(broker, "dash", path)
    dropped: list[int] = []
    stray.client.on_disconnect = lambda *_args: dropped.append(1)
    stray.client.reconnect_delay_set(30, 60)
    stray.client.connect_async("127.0.0.1", broker.ws_port)
    stray.client.loop_start()
    try:
        if on_nats(broker):
            wait_for(lambda: dropped, timeout=5)
        else:
            wait_for(lambda: REFUSED_CONNECTIONS.labels(reason="ws_path")._value.get() > before, timeout=5)
        assert stray.connack.empty()
    finally:
        stray.close()


def test_an_oversized_websocket_message_closes_the_connection(make_broker):
    broker = make_broker(max_packet_bytes=4096)
    watcher = Subscriber(broker.port, "watch", broker.token("watch", "admin"))
    assert watcher.connect() == 0
    watcher.subscribe("restaurant/7/#")
    sender = ws_client(broker, "svc", "/mqtt", role="service", rid=None)
    assert sender.connect() == 0
    disconnected: list[int] = []
    sender.client.on_disconnect = lambda *args: disconnected.append(1)
    sender.client.publish("restaurant/7/orders", b"x" * 10_000, qos=0)
    wait_for(lambda: disconnected, timeout=5)
    assert watcher.drain(quiet=0.5) == []
    sender.close()
    watcher.close()
