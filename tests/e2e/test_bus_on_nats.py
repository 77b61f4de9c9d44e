"""`orderbus up --broker nats://…`: the real command on the session's three-node NATS cluster (our auth
callout in front), and its bad input: a wrong scheme, no MQTT port, a cluster that is not there."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import ORDERBUS, token
from tests.nats import NatsBus
from tests.support import Subscriber, free_port, wait_for


def test_up_on_the_cluster_is_ready_and_an_order_reaches_a_subscriber_on_another_node(nats_bus: NatsBus, tmp_path):
    data_dir = tmp_path / "data"
    nats_bus.prepare(data_dir)  # the callout's credentials, as `orderbus cluster up --callout data` makes them
    first, second = nats_bus.cluster.nodes[0], nats_bus.cluster.nodes[1]
    urls = ",".join(node.nats_url for node in nats_bus.cluster.nodes)
    http_port, log = free_port(), tmp_path / "up.log"
    args = ["--data-dir", str(data_dir), "--http-port", str(http_port), "--demo", "--broker", urls]
    args += ["--mqtt-host", first.host, "--mqtt-port", str(first.ports.mqtt), "--ws-port", str(first.ports.websocket)]
    with log.open("w") as sink:
        process = subprocess.Popen([ORDERBUS, "up", *args], stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "Ctrl-C to stop" in log.read_text() or process.poll() is not None, timeout=30)
        assert process.poll() is None, log.read_text()
        assert f"NATS cluster  {urls} (auth-callout responder: here)" in log.read_text()
        base = f"http://127.0.0.1:{http_port}"
        ready = wait_for(lambda: (r := httpx.get(f"{base}/readyz")).status_code == 200 and r.json(), timeout=20)
        assert ready["checks"]["responder"]["ok"] and ready["checks"]["broker"]["ok"]
        assert "listeners" not in ready["checks"], "no embedded listeners to check on NATS"
        assert httpx.get(f"{base}/api/v1/config").json()["ws_port"] == first.ports.websocket
        summary = httpx.get(f"{base}/api/v1/ops/summary").json()  # no broker tables here: said, not zeros
        assert (
            summary["broker_engine"] == "nats" and summary["broker_up"] is None and "/connz" in summary["broker_note"]
        )
        credentials = json.loads((data_dir / "demo-credentials.json").read_text())
        answer = httpx.post(f"{base}/api/v1/auth/login", json=credentials).json()
        admin = httpx.Client(base_url=f"{base}/api/v1", headers={"authorization": f"Bearer {answer['access_token']}"})
        rid = answer["restaurant_id"]
        watcher = Subscriber(
            second.ports.mqtt,
            "watcher",
            token(data_dir, "--sub", "watcher", "--restaurant", str(rid), "--role", "staff"),
        )
        try:
            assert watcher.connect() == 0  # on node 2: the callout of this `up` logged it in
            assert watcher.subscribe(f"restaurant/{rid}/orders") == 1
            item = admin.get(f"/restaurants/{rid}/menu-items").json()["data"][0]
            created = admin.post(
                f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": item["id"], "quantity": 1}]}
            )
            assert created.status_code == 201, created.text
            [got] = watcher.collect(1, timeout=15)
            assert got.json()["type"] == "new_order" and got.json()["data"]["order"]["id"] == created.json()["id"]
        finally:
            watcher.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log.read_text()[-2000:]


def bad_up(tmp_path: Path, *args: str) -> str:
    """`orderbus up` that must refuse to start: exit 2, one error line naming the flag, no traceback."""
    flags = ["--data-dir", str(tmp_path / "data"), "--http-port", str(free_port()), *args]
    result = subprocess.run([ORDERBUS, "up", *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("orderbus: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("broker", "needle"),
    [("mqtt://127.0.0.1:1883", "is not a NATS URL"), ("nats://", "is not a NATS URL"), (",", "names no server")],
)
def test_a_broker_url_that_is_not_nats_is_refused_naming_the_flag(tmp_path, broker, needle):
    line = bad_up(tmp_path, "--broker", broker, "--mqtt-port", str(free_port()))
    assert line.startswith("orderbus: error: --broker") and needle in line


def test_nats_without_the_mqtt_port_of_a_node_is_refused(tmp_path):
    assert "needs --mqtt-port" in bad_up(tmp_path, "--broker", "nats://127.0.0.1:4222")


def test_a_cluster_that_is_not_up_is_one_line_naming_the_flag(nats_bus: NatsBus, tmp_path):
    nobody = free_port()
    line = bad_up(tmp_path, "--broker", f"nats://127.0.0.1:{free_port()}", "--mqtt-port", str(nobody))
    assert line.startswith(f"orderbus: error: --mqtt-port {nobody}: no MQTT listener")
    # the MQTT listener answers but NATS does not: the responder cannot log in
    node = nats_bus.cluster.nodes[0]
    line = bad_up(tmp_path, "--broker", f"nats://127.0.0.1:{free_port()}", "--mqtt-port", str(node.ports.mqtt))
    assert line.startswith("orderbus: error: --broker: cannot connect to NATS")


def test_cluster_up_with_the_callout_then_up_on_it_gives_a_working_bus(tmp_path):
    """The two commands of the README: `orderbus cluster up --callout data`, then `orderbus up --broker …`
    on the same data directory; a device token from `orderbus token` is admitted, a bad one refused."""
    data_dir, cluster_dir, log = tmp_path / "data", tmp_path / "nats", tmp_path / "cluster.log"
    args = ["cluster", "up", "--nodes", "1", "--data-dir", str(cluster_dir), "--callout", str(data_dir)]
    with log.open("w") as sink:
        cluster = subprocess.Popen([ORDERBUS, *args], stdout=sink, stderr=subprocess.STDOUT, text=True)
    up_log = tmp_path / "up.log"
    up: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: "Ctrl-C to stop" in log.read_text() or cluster.poll() is not None, timeout=60)
        assert cluster.poll() is None and "log in with orderbus tokens" in log.read_text(), log.read_text()
        ports = json.loads((cluster_dir / "cluster.json").read_text())["ports"][0]
        http_port = free_port()
        flags = [
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(http_port),
            "--broker",
            f"nats://127.0.0.1:{ports['client']}",
        ]
        flags += ["--mqtt-port", str(ports["mqtt"]), "--ws-port", str(ports["websocket"])]
        with up_log.open("w") as sink:
            up = subprocess.Popen([ORDERBUS, "up", *flags], stdout=sink, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: "Ctrl-C to stop" in up_log.read_text() or up.poll() is not None, timeout=30)
        assert up.poll() is None, up_log.read_text()
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{http_port}/readyz").status_code == 200, timeout=30)
        scale = token(data_dir, "--sub", "scale-1", "--restaurant", "7", "--role", "scale")
        device = Subscriber(ports["mqtt"], "scale-1", scale)
        assert device.connect() == 0
        device.close()
        assert Subscriber(ports["mqtt"], "scale-2", "not-a-token").connect() != 0
    finally:
        for process in (up, cluster):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
