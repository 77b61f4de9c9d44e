"""MQTT over WebSocket: served at /mqtt only, with the same packet size limit as TCP."""

from __future__ import annotations

import inspect
import time

import pytest
import websockets

from broker.stats import REFUSED_CONNECTIONS
from tests.support import Subscriber, wait_for

WS_DEFAULT_PING_SECONDS: float = inspect.signature(websockets.serve).parameters["ping_interval"].default


def ws_client(broker, client_id: str, path: str, role: str = "admin", rid: int | None = 7) -> Subscriber:
    subscriber = Subscriber(
        broker.listeners.ws_port, client_id, broker.token(client_id, role, rid), transport="websockets"
    )
    subscriber.client.ws_set_options(path=path)
    return subscriber


def test_websocket_clients_connect_at_mqtt_path(broker):
    dashboard = ws_client(broker, "dash", "/mqtt")
    assert dashboard.connect() == 0
    assert dashboard.subscribe("restaurant/7/orders") == 1
    bus = Subscriber(broker.port, "svc", broker.token("svc", "service", None))
    assert bus.connect() == 0
    bus.client.publish("restaurant/7/orders", b"hello", qos=1).wait_for_publish(5)
    assert dashboard.collect(1)[0].payload == b"hello"
    for client in (dashboard, bus):
        client.close()


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
    before = REFUSED_CONNECTIONS.labels(reason="ws_path")._value.get()
    stray = ws_client(broker, "dash", path)
    stray.client.connect_async("127.0.0.1", broker.listeners.ws_port)
    stray.client.loop_start()
    try:
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
