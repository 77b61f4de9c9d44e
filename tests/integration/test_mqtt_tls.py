"""The bus's own MQTT clients over TLS (`mqtt_tls_ca`, `--mqtt-tls-ca`): the embedded broker's real TLS listener, real
paho clients, a private CA made here.

The relay and ingest (`orderbus up` with `--mqtt-host` at the TLS listener) and a device agent connect over TLS and
verify the broker's certificate and host name against the CA; a broker that does not verify is never connected to,
neither over TLS nor in plain (MQTT 3.1.1 §5.4.5 recommends TLS but has no normative statement on it). A CA file
that is missing or not PEM stops the command with one line naming it.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from api.routers import ops
from core.tls import client_context
from devices.link import DeviceLink
from scripts.ports import free_port
from tests.certificates import issued, self_signed, write_pem
from tests.integration.test_ops import scrape
from tests.support import ORDERBUS, Stack, Subscriber, run_async, wait_for

NOT_VERIFIED = "the broker's certificate does not verify"


@dataclass
class Pki:
    ca: Path  # the CA that signed the broker's certificate
    other_ca: Path  # a CA that did not
    certfile: Path  # the broker's, for 127.0.0.1 only (no DNS name: `localhost` does not match it)
    keyfile: Path


@pytest.fixture
def pki(tmp_path) -> Pki:
    ca = self_signed("orderbus test CA")
    made = Pki(tmp_path / "ca.pem", tmp_path / "other-ca.pem", tmp_path / "server.pem", tmp_path / "server-key.pem")
    write_pem(made.ca, ca)
    write_pem(made.other_ca, self_signed("someone else's CA"))
    write_pem(made.certfile, issued(ca, "127.0.0.1", ["127.0.0.1"]), made.keyfile)
    return made


def tls_stack(data_dir: Path, pki: Pki, ca: Path) -> Stack:
    """`orderbus up` with a TLS listener, its relay and ingest connecting to it over TLS, verified against `ca`."""
    tls_port = free_port()
    return Stack(
        data_dir,
        tls_port=tls_port,
        tls_certfile=pki.certfile,
        tls_keyfile=pki.keyfile,
        mqtt_host=f"127.0.0.1:{tls_port}",
        mqtt_tls_ca=ca,
    ).start()


@pytest.fixture
def secure(tmp_path, pki):
    stack = tls_stack(tmp_path / "data", pki, pki.ca)
    yield stack
    stack.stop()


def tls_port(stack: Stack) -> int:
    assert stack.settings.tls_port is not None
    return stack.settings.tls_port


def connect_failures(client: str) -> float:
    return REGISTRY.get_sample_value("orderbus_bridge_connect_failures_total", {"client": client, "reason": "tls"}) or 0


def sessions_accepted(role: str) -> float:
    """CONNACK 0 given to `role` on any listener, plain or TLS, since this test process started."""
    labels = ({"role": role, "listener": listener} for listener in ("tcp", "tls", "ws", "wss"))
    return sum(REGISTRY.get_sample_value("orderbus_broker_connects_total", each) or 0 for each in labels)


def test_the_relay_publishes_an_order_over_tls_to_a_tls_subscriber(secure: Stack, pki):
    rid = secure.add_restaurant("Bistro", "tls@example.com")
    burger = secure.add_menu_item(rid, "Burger")
    watcher = Subscriber(tls_port(secure), "watcher", secure.mqtt_token("watcher", "staff", rid), ca_certs=pki.ca)
    try:
        assert watcher.connect() == 0
        assert watcher.subscribe(f"restaurant/{rid}/orders") == 1
        admin = secure.http(secure.api_token("admin-a", "admin", rid))
        created = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": burger, "quantity": 1}]})
        assert created.status_code == 201, created.text
        (event,) = watcher.collect(1)
        assert event.json()["type"] == "new_order" and event.json()["data"]["order"]["id"] == created.json()["id"]
        metrics = scrape(secure)
        assert metrics.value("orderbus_broker_connections", role="service", listener="tls") == 2  # relay, ingest
        assert metrics.value("orderbus_broker_connections", role="service", listener="tcp") == 0
    finally:
        watcher.close()


@pytest.mark.parametrize(
    "names",
    [("--mqtt-host", "--mqtt-port", "--tls", "--cafile"), ("--mqtt-host", "--mqtt-port", None, "--mqtt-tls-ca")],
    ids=["mosquitto-names", "common-names"],
)
def test_a_scale_agent_connects_over_tls_and_ingest_sees_it_online(secure: Stack, pki, tmp_path, names):
    host, port, tls, cafile = names
    rid = secure.add_restaurant("Bistro", "tls@example.com")
    item = secure.add_menu_item(rid, "Flour", enable_stock_tracking=True, stock_quantity=10)
    token = secure.add_device(rid, "scale-1", "scale", item_id=item)
    args = ["device", "scale", "--stdin", "--item", str(item), host, "127.0.0.1", port, str(tls_port(secure))]
    args += [tls] if tls else []
    args += ["--api-url", secure.base_url]
    log = (tmp_path / "scale.log").open("w")
    agent = subprocess.Popen(
        [ORDERBUS, *args, cafile, str(pki.ca), "--token", token],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    admin = secure.http(secure.api_token("admin-a", "admin", rid))

    def presence() -> str:
        (device,) = admin.get(f"/restaurants/{rid}/devices").json()["data"]
        return str(device["presence"])

    try:
        wait_for(lambda: presence() == "online", timeout=20)
        assert scrape(secure).value("orderbus_broker_connections", role="scale", listener="tls") == 1
        assert agent.stdin is not None
        agent.stdin.close()  # end of input: the agent says `offline` and leaves
        assert agent.wait(20) == 0, (tmp_path / "scale.log").read_text()
        wait_for(lambda: presence() == "offline")
    finally:
        agent.kill()
        log.close()


def test_a_bridge_with_the_wrong_ca_never_connects_and_counts_why(tmp_path, pki, caplog):
    caplog.set_level(logging.WARNING, logger="orderbus.bridge")
    before = connect_failures("relay"), connect_failures("ingest")
    accepted = sessions_accepted("service")
    stack = tls_stack(tmp_path / "data", pki, pki.other_ca)
    try:
        wait_for(lambda: connect_failures("relay") > before[0] and connect_failures("ingest") > before[1])
        refusals = [r.getMessage() for r in caplog.records if r.name == "orderbus.bridge" and NOT_VERIFIED in r.message]
        assert any(m.startswith("orderbus-relay: cannot connect to the broker at 127.0.0.1:") for m in refusals)
        assert all(r.levelno == logging.ERROR for r in caplog.records if NOT_VERIFIED in r.message)
        assert scrape(stack).value("orderbus_broker_connections", role="service") == 0
        assert sessions_accepted("service") == accepted  # never connected, over TLS or in plain
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("host", "ca", "why"),
    [("127.0.0.1", "other_ca", "unable to get local issuer certificate"), ("localhost", "ca", "Hostname mismatch")],
    ids=["another-ca", "another-host-name"],
)
def test_a_device_refuses_a_broker_that_does_not_verify(secure: Stack, pki, caplog, host, ca, why):
    caplog.set_level(logging.WARNING, logger="orderbus.devices")
    rid = secure.add_restaurant("Bistro", "tls@example.com")
    token = secure.add_device(rid, "tablet-1", "tablet")
    accepted = sessions_accepted("tablet")
    link = DeviceLink(
        token,
        host,
        tls_port(secure),
        subscriptions=[],
        on_message=lambda _m: None,
        persistent=False,
        tls=client_context(getattr(pki, ca), "--tls-ca"),
    )
    with link:
        record = wait_for(lambda: next((r for r in caplog.records if NOT_VERIFIED in r.getMessage()), None))
        assert record.levelno == logging.ERROR and why in record.getMessage()
        assert record.getMessage().startswith(f"tablet-1: cannot connect to {host}:{tls_port(secure)}: ")
        assert not link.connected.is_set()
        assert sessions_accepted("tablet") == accepted  # neither over TLS nor in plain


@pytest.mark.parametrize(
    "command",
    [
        ["bridge", "--mqtt-tls-ca", "{ca}"],
        ["up", "--mqtt-tls-ca", "{ca}"],
        ["device", "scale", "--token", "t", "--item", "1", "--mqtt-tls-ca", "{ca}"],
        ["device", "printer", "--token", "t", "--printer", "dummy", "--mqtt-tls-ca", "{ca}"],
    ],
    ids=["bridge", "up", "scale", "printer"],
)
@pytest.mark.parametrize("ca", ["missing.pem", "not-pem.pem", "key-only.pem"])
def test_an_unusable_ca_file_is_one_line_naming_it_and_exit_2(tmp_path, pki, command, ca):
    (tmp_path / "not-pem.pem").write_text("this is not a certificate\n")
    (tmp_path / "key-only.pem").write_bytes(pki.keyfile.read_bytes())  # PEM, but no certificate in it
    path = tmp_path / ca
    argv = [word.format(ca=path) for word in command]
    result = subprocess.run(
        [ORDERBUS, *argv, "--data-dir", str(tmp_path / "data")] if command[0] != "device" else [ORDERBUS, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "--" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()  # nothing was set up


@pytest.mark.parametrize(("ca", "answer"), [("ca", 0), ("other_ca", "unable to get local issuer certificate")])
def test_the_api_probe_of_a_tls_broker_verifies_it(secure: Stack, pki, ca, answer):
    """`orderbus api` alone with mqtt_host and mqtt_tls_ca: /readyz's probe is an MQTT CONNECT over verified TLS."""
    probe = ops.broker_probe("127.0.0.1", tls_port(secure), client_context(getattr(pki, ca), "--mqtt-tls-ca"))

    async def check() -> dict[str, Any]:
        return await probe(SimpleNamespace(tokens=secure.tokens))

    result = run_async(check())
    if answer == 0:
        assert result == {"ok": True, "address": f"127.0.0.1:{tls_port(secure)}"}
    else:
        assert result["ok"] is False and "SSLCertVerificationError" in result["error"], result
        assert answer in result["error"]
