"""Refused devices say why in one line and stop, instead of "Unspecified error" in a tight loop; agents find
the bus from the server's settings and refuse a broker that is not orderbus's.

Real agents (`orderbus device …` processes, or DeviceLink in this process), the real stack and its API."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from prometheus_client import REGISTRY

from core.commands import DeviceKind
from core.services import devices
from core.tokens import ALGORITHM
from core.unit_of_work import UnitOfWork
from devices import link as link_module
from devices.link import DeviceLink
from devices.refusal import accepts_anyone
from tests.support import Stack, free_port, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")
AGENT_ARGS = {
    "printer": ["printer", "--printer", "dummy"],
    "tablet": ["kds"],
    "scale": ["scale", "--item", "1"],
}


def agent(kind: str, token: str, *options: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [ORDERBUS, "device", *AGENT_ARGS[kind], *options]
    if kind == "printer":
        command += ["--state-dir", str(tmp_path / "state")]
    env = {**os.environ, "ORDERBUS_DEVICE_TOKEN": token, "COLUMNS": "300"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def expired(stack: Stack, token: str) -> str:
    """The same device's token, genuinely signed, with its `exp` in the past."""
    claims = stack.tokens.verify(token, "mqtt")
    return jwt.encode({**claims, "exp": int(time.time()) - 60}, stack.tokens.key, ALGORITHM)


def revoke(stack: Stack, rid: int, device_id: str) -> None:
    with UnitOfWork(stack.engine) as uow:
        devices.revoke_device(uow, rid, device_id)
        uow.commit()


def scale_link(stack: Stack, token: str, api_url: str | None = None) -> DeviceLink:
    """A scale's link to the stack's broker, with no subscriptions: what a refusal does to it is the point."""
    return DeviceLink(
        token,
        "127.0.0.1",
        stack.settings.mqtt_port,
        subscriptions=[],
        on_message=lambda _m: None,
        persistent=False,
        api_url=api_url or stack.base_url,
        expected_role="scale",
    )


@pytest.mark.parametrize("kind", ["printer", "tablet", "scale"])
@pytest.mark.parametrize("why", ["expired", "revoked", "wrong_role"])
def test_an_agent_with_a_dead_token_says_why_in_one_line_and_exits(stack: Stack, tmp_path, kind, why):
    rid = stack.add_restaurant("A", "a@example.com")
    station = {"station": "grill"} if kind == "printer" else {}
    token = stack.add_device(rid, f"{kind}-1", kind, **station)
    if why == "expired":
        token = expired(stack, token)
    elif why == "revoked":
        revoke(stack, rid, f"{kind}-1")
    else:  # another kind's token given to this agent
        other: DeviceKind = "scale" if kind != "scale" else "tablet"
        token = stack.add_device(rid, f"{other}-2", other)
    where = ["--mqtt-port", str(stack.settings.mqtt_port), "--api-url", stack.base_url]
    result = agent(kind, token, *where, tmp_path=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr  # one line, not a retry loop's worth
    words = {"expired": "token expired at", "revoked": "device revoked at", "wrong_role": "wrong role"}
    todo = {"expired": "orderbus token --sub", "revoked": "register a new device", "wrong_role": "orderbus device"}
    assert words[why] in lines[0] and todo[why] in lines[0], lines[0]
    assert token not in result.stdout + result.stderr


def test_a_device_revoked_while_connected_says_so_once_and_stays_down(stack: Stack, caplog):
    rid = stack.add_restaurant("A", "a@example.com")
    token = stack.add_device(rid, "scale-1", "scale")
    link = scale_link(stack, token)
    caplog.set_level(logging.ERROR, logger="orderbus.devices")
    with link:
        wait_for(link.connected.is_set, timeout=30)
        revoke(stack, rid, "scale-1")
        wait_for(link.refused.is_set, timeout=30)  # the broker dropped it, refused it again, the API said why
        assert link.refusal is not None and link.refusal.reason == "revoked"
        assert link.refused_attempts == 1
        wait_for(lambda: link._client._thread is None)  # its network loop is over: no attempt can follow
        assert not link.connected.is_set() and link.refused_attempts == 1
    said = [record.getMessage() for record in caplog.records if "revoked" in record.getMessage()]
    assert said == [link.refusal_line()] and "register a new device" in said[0]


def test_without_a_reason_the_link_backs_off_and_doubles_its_pause(stack: Stack, monkeypatch):
    """The API cannot be asked (nothing at --api-url): retry, but less and less often, up to the cap."""
    monkeypatch.setattr(link_module, "REFUSED_DELAYS", (0.1, 0.4))
    rid = stack.add_restaurant("A", "a@example.com")
    token = stack.add_device(rid, "scale-1", "scale")
    revoke(stack, rid, "scale-1")
    link = scale_link(stack, token, api_url=f"http://127.0.0.1:{free_port()}")
    with link:
        wait_for(lambda: link.refused_attempts >= 4, timeout=60)
        assert link.refusal is None and not link.refused.is_set()
        assert link._refused_delay == 0.4  # 0.1, 0.2, 0.4, then held at the cap


@pytest.fixture
def mosquitto(tmp_path):
    """A broker that lets anyone in, like the Mosquitto holding 1883 on these machines; -v logs every CONNECT."""
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    log = tmp_path / "mosquitto.log"
    with log.open("w") as sink:
        process = subprocess.Popen(["mosquitto", "-v", "-c", str(config)], stdout=sink, stderr=subprocess.STDOUT)
    wait_for(lambda: f"port {port}" in log.read_text() or process.poll() is not None)
    assert process.poll() is None, log.read_text()
    yield port, log
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize("kind", ["printer", "scale"])
def test_an_agent_refuses_a_broker_that_lets_anyone_in_and_never_sends_it_the_token(app, mosquitto, tmp_path, kind):
    port, log = mosquitto
    rid = app.add_restaurant("A", "a@example.com")
    station = {"station": "grill"} if kind == "printer" else {}
    token = app.mqtt_token(f"{kind}-1", kind, rid, **station)
    result = agent(
        kind, token, "--mqtt-port", str(port), "--api-url", f"http://127.0.0.1:{free_port()}", tmp_path=tmp_path
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port} accepts connections without a valid token" in lines[0]
    assert "--mqtt-host/--mqtt-port" in lines[0]
    assert "as orderbus-probe-" in log.read_text()  # the probe, with no token, is all that broker ever saw
    assert f"as {kind}-1" not in log.read_text() and token not in log.read_text()


def test_simulate_refuses_a_broker_that_lets_anyone_in(mosquitto, tmp_path):
    port, _log = mosquitto
    result = subprocess.run(
        [ORDERBUS, "simulate", "--mqtt-port", str(port), "--api-url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not orderbus's broker" in result.stderr


def test_an_agent_finds_the_broker_and_the_api_in_the_servers_config_file(stack: Stack, tmp_path):
    """No --mqtt-port, no --api-url: the same TOML file the server reads says where the bus is."""
    rid = stack.add_restaurant("A", "a@example.com")
    token = stack.add_device(rid, "printer-1", "printer", station="grill")
    config = tmp_path / "orderbus.toml"
    config.write_text(f"mqtt_port = {stack.settings.mqtt_port}\nhttp_port = {stack.settings.http_port}\n")
    command = [ORDERBUS, "device", "printer", "--printer", "dummy", "--state-dir", str(tmp_path / "s")]
    env = {**os.environ, "ORDERBUS_DEVICE_TOKEN": token}
    env.pop("ORDERBUS_CONFIG", None)
    process = subprocess.Popen(
        [*command, "--config", str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: stack.subscribed(f"restaurant/{rid}/kitchen/grill/tickets", "printer-1"), timeout=30)
        admin = stack.http(stack.api_token("admin-a", "admin", rid))
        wait_for(lambda: admin.get(f"/restaurants/{rid}/devices").json()["data"][0]["presence"] == "online", timeout=30)
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


@pytest.mark.parametrize("kind", ["printer", "scale", "scale-stdin"])
def test_an_agent_revoked_while_running_says_why_once_and_exits(stack: Stack, tmp_path, kind):
    """The running process: dropped by the broker, refused at its reconnect, told why by the API, gone (exit 2)."""
    rid = stack.add_restaurant("A", "a@example.com")
    device_kind: DeviceKind = "printer" if kind == "printer" else "scale"
    token = stack.add_device(rid, "dev-1", device_kind, **({"station": "grill"} if kind == "printer" else {}))
    command = [ORDERBUS, "device", *AGENT_ARGS[device_kind], "--mqtt-port", str(stack.settings.mqtt_port)]
    command += ["--api-url", stack.base_url]
    command += ["--state-dir", str(tmp_path / "state")] if kind == "printer" else []
    command += ["--stdin"] if kind == "scale-stdin" else []
    env = {**os.environ, "ORDERBUS_DEVICE_TOKEN": token}
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    admin = stack.http(stack.api_token("admin-a", "admin", rid))
    try:
        wait_for(lambda: admin.get(f"/restaurants/{rid}/devices").json()["data"][0]["presence"] == "online", timeout=30)
        revoke(stack, rid, "dev-1")
        process.wait(timeout=60)  # stdin left open: a --stdin scale does not stop for lack of input
        assert process.stderr is not None
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 2, err
    said = [line for line in err.splitlines() if "device revoked at" in line]
    assert len(said) == 1 and "dev-1: device revoked at" in said[0] and "register a new device" in said[0], err
    assert err.count("refused the connection") == 0  # the reason came at the first refusal: no retries


def test_a_token_expiring_while_connected_is_said_once_and_the_link_stays_down(stack: Stack):
    rid = stack.add_restaurant("A", "a@example.com")
    stack.add_device(rid, "scale-1", "scale")
    with UnitOfWork(stack.engine) as uow:  # a short-lived token, through the record as `orderbus token --ttl 3s`
        token = devices.reissue_token(uow, stack.tokens, rid, "scale-1", 0, ttl_seconds=3).token
        uow.commit()
    link = scale_link(stack, token)
    with link:
        wait_for(link.connected.is_set, timeout=30)
        wait_for(link.refused.is_set, timeout=30)  # the broker ends the connection at exp; the reconnect is refused
        assert link.refusal is not None and link.refusal.reason == "expired"
        assert "token expired at" in link.refusal_line() and "orderbus token --sub scale-1" in link.refusal_line()
        assert link.refused_attempts == 1
        wait_for(lambda: link._client._thread is None)


def refusals(stack: Stack, reason: str) -> float:
    """The broker's count of CONNECTs refused for `reason`: the embedded broker's, or the NATS responder's."""
    name, label = (
        ("orderbus_callout_decisions_total", "result")
        if stack.on_nats
        else ("orderbus_broker_auth_failures_total", "reason")
    )
    return REGISTRY.get_sample_value(name, {label: reason}) or 0.0


def test_our_broker_refuses_the_agents_probe_and_counts_it_apart_from_bad_logins(stack: Stack):
    """Each agent starts by asking whether the broker lets anyone in (a CONNECT with no token, client id
    `orderbus-probe-…`). Ours refuse it, and count it as `probe`, so a fleet restarting does not read as a
    burst of forged tokens (`OrderbusAuthFailureBurst` leaves `probe` out)."""
    probes, malformed = refusals(stack, "probe"), refusals(stack, "malformed")
    assert accepts_anyone("127.0.0.1", stack.settings.mqtt_port) is False
    assert accepts_anyone("127.0.0.1", stack.settings.mqtt_port) is False
    assert refusals(stack, "probe") == probes + 2
    assert refusals(stack, "malformed") == malformed
