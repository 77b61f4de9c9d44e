"""TLS listeners from config: MQTT over TLS and secure WebSocket, with a certificate the test makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import raw_mqtt as raw
from tests.certificates import self_signed, write_pem
from tests.support import Subscriber


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_pem(certfile, self_signed("orderbus test", ["localhost", "127.0.0.1"]), keyfile)
    return certfile, keyfile


def tls_client(broker, client_id: str, certfile: Path, *, websocket: bool, token: str | None = None) -> Subscriber:
    port = broker.listeners.wss_port if websocket else broker.listeners.tls_port
    return Subscriber(
        port,
        client_id,
        token or broker.token(client_id, "admin"),
        transport="websockets" if websocket else "tcp",
        ca_certs=certfile,
    )


@pytest.mark.parametrize("websocket", [False, True], ids=["mqtts", "wss"])
def test_tls_listeners_carry_authenticated_traffic(make_broker, certificate, websocket):
    broker = make_broker(tls=certificate)
    secure = tls_client(broker, "dash", certificate[0], websocket=websocket)
    assert secure.connect() == 0
    assert secure.subscribe("restaurant/7/orders") == 1
    bus = Subscriber(broker.port, "svc", broker.token("svc", "service", None))
    assert bus.connect() == 0
    bus.client.publish("restaurant/7/orders", b"over tls", qos=1).wait_for_publish(5)
    assert secure.collect(1)[0].payload == b"over tls"
    for client in (secure, bus):
        client.close()


def test_the_tls_port_refuses_plain_mqtt_and_still_checks_tokens(make_broker, certificate):
    broker = make_broker(tls=certificate)
    plain = raw.open_socket(broker.listeners.tls_port)
    plain.sendall(raw.connect("dash", broker.token("dash", "admin")))
    assert raw.closed_by_peer(plain, within=5.0)
    forged = tls_client(broker, "dash", certificate[0], websocket=False, token="forged")
    assert forged.connect() == 135
