"""The real `orderbus` command: demo start-up, tokens, mosquitto_sub, port clashes, clean shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")


@dataclass
class Up:
    process: subprocess.Popen[str]
    data_dir: Path
    http_port: int
    mqtt_port: int
    ws_port: int
    log: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_up(data_dir: Path, *extra: str) -> Up:
    http_port, mqtt_port, ws_port = free_port(), free_port(), free_port()
    log = data_dir.parent / f"up-{http_port}.log"
    args = [
        ORDERBUS,
        "up",
        "--demo",
        "--data-dir",
        str(data_dir),
        "--http-port",
        str(http_port),
        "--mqtt-port",
        str(mqtt_port),
        "--ws-port",
        str(ws_port),
        *extra,
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, text=True)
    up = Up(process, data_dir, http_port, mqtt_port, ws_port, log)
    wait_for(lambda: "Ctrl-C to stop" in up.output() or process.poll() is not None, timeout=30)
    assert process.poll() is None, up.output()
    return up


@pytest.fixture
def up(tmp_path) -> Iterator[Up]:
    running = start_up(tmp_path / "data")
    yield running
    running.stop()


def token(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [ORDERBUS, "token", "--data-dir", str(data_dir), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]


def login(up: Up) -> tuple[httpx.Client, int]:
    credentials = json.loads((up.data_dir / "demo-credentials.json").read_text())
    assert credentials["email"] in up.output() and credentials["password"] in up.output()
    answer = httpx.post(f"{up.api}/auth/login", json=credentials).json()
    return httpx.Client(base_url=up.api, headers={"authorization": f"Bearer {answer['access_token']}"}), answer[
        "restaurant_id"
    ]


def test_up_demo_prints_where_to_look_and_an_order_reaches_mosquitto_sub(up: Up):
    out = up.output()
    assert f"http://127.0.0.1:{up.http_port}/docs" in out
    assert f"mqtt://127.0.0.1:{up.mqtt_port}" in out
    assert f"ws://127.0.0.1:{up.ws_port}/mqtt" in out
    admin, rid = login(up)
    watcher_token = token(up.data_dir, "--sub", "watcher", "--restaurant", str(rid), "--role", "staff")
    sub = subprocess.Popen(
        [
            shutil.which("mosquitto_sub") or "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(up.mqtt_port),
            "-i",
            "watcher",
            "-u",
            "watcher",
            "-P",
            watcher_token,
            "-q",
            "1",
            "-t",
            f"restaurant/{rid}/orders",
            "-C",
            "1",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        items = admin.get(f"/restaurants/{rid}/menu-items").json()
        assert len(items) >= 3 and any(item["enable_stock_tracking"] for item in items)
        # mosquitto_sub is subscribed once the broker logs its connection; keep posting until it hears one
        wait_for(lambda: "client_id=watcher" in up.output())
        placed = admin.post(
            f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": items[0]["id"], "quantity": 1}]}
        )
        assert placed.status_code == 201
        out, err = sub.communicate(timeout=25)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    event = json.loads(out)
    assert event["type"] == "new_order" and event["data"]["order"]["id"] == placed.json()["id"]


def test_mosquitto_sub_with_a_bad_token_or_a_foreign_topic_is_refused(up: Up):
    refused = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(up.mqtt_port),
            "-i",
            "x",
            "-u",
            "x",
            "-P",
            "forged",
            "-t",
            "restaurant/1/orders",
            "-C",
            "1",
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "not authorised" in (refused.stderr + refused.stdout).lower() or "refused" in refused.stderr.lower()


def test_demo_is_created_once(tmp_path):
    first = start_up(tmp_path / "data")
    password = json.loads((tmp_path / "data" / "demo-credentials.json").read_text())["password"]
    assert first.stop() == 0
    second = start_up(tmp_path / "data")
    try:
        assert password in second.output()
        admin, rid = login(second)
        assert len(admin.get(f"/restaurants/{rid}/categories").json()) == 2
    finally:
        assert second.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "orderbus.db") as db:
        assert db.execute("select count(*) from restaurant").fetchone() == (1,)
        assert db.execute("select count(*) from user").fetchone() == (1,)


def test_a_taken_port_gives_one_clear_line(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            [
                ORDERBUS,
                "up",
                "--data-dir",
                str(tmp_path / "d"),
                "--mqtt-port",
                str(port),
                "--http-port",
                str(free_port()),
                "--ws-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert f"port {port}" in result.stderr and "--mqtt-port" in result.stderr


def test_bad_flags_and_bad_config_are_refused_clearly(tmp_path):
    bad_port = subprocess.run([ORDERBUS, "up", "--http-port", "eighty"], capture_output=True, text=True)
    assert bad_port.returncode == 2 and "Traceback" not in bad_port.stderr
    missing = subprocess.run([ORDERBUS, "up", "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "config file not found" in missing.stderr
    bad_role = subprocess.run(
        [ORDERBUS, "token", "--data-dir", str(tmp_path), "--sub", "x", "--role", "chef", "--restaurant", "1"],
        capture_output=True,
        text=True,
    )
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    bad_ttl = subprocess.run(
        [
            ORDERBUS,
            "token",
            "--data-dir",
            str(tmp_path),
            "--sub",
            "x",
            "--role",
            "admin",
            "--restaurant",
            "1",
            "--ttl",
            "forever",
        ],
        capture_output=True,
        text=True,
    )
    assert bad_ttl.returncode == 2


def test_config_file_and_environment_set_the_ports(tmp_path):
    http_port = free_port()
    config = tmp_path / "orderbus.toml"
    config.write_text(f"http_port = {http_port}\nmqtt_port = {free_port()}\nws_port = {free_port()}\n")
    env = {"ORDERBUS_DATA_DIR": str(tmp_path / "envdata"), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [ORDERBUS, "up", "--config", str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: _healthy(http_port), timeout=30)
        assert (tmp_path / "envdata" / "orderbus.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_key_file_is_private_and_tokens_survive_restarts(tmp_path):
    data_dir = tmp_path / "data"
    assert start_up(data_dir).stop() == 0  # the bus makes the key: `orderbus token` never does (cli/tokens.py)
    first = token(data_dir, "--sub", "a", "--role", "admin", "--restaurant", "1")
    assert (data_dir / "jwt.key").stat().st_mode & 0o777 == 0o600
    up = start_up(data_dir)
    try:
        check = subprocess.run(
            [
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                str(up.mqtt_port),
                "-i",
                "a",
                "-u",
                "a",
                "-P",
                first,
                "-t",
                "restaurant/1/orders",
                "-W",
                "1",
            ],
            capture_output=True,
            text=True,
        )
        assert "not authorised" not in check.stderr.lower()  # timed out waiting: it was connected
    finally:
        up.stop()


def test_sigterm_stops_cleanly_and_every_committed_event_is_published(up: Up):
    admin, rid = login(up)
    items = admin.get(f"/restaurants/{rid}/menu-items").json()
    for _ in range(20):
        admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": items[0]["id"], "quantity": 1}]})
    assert up.stop() == 0
    assert "Traceback" not in up.output()
    with sqlite3.connect(up.data_dir / "orderbus.db") as db:
        pending = db.execute("select count(*) from outbox_event where published_at is null").fetchone()[0]
        seqs = [
            row[0] for row in db.execute("select seq from outbox_event where restaurant_id = ? order by seq", (rid,))
        ]
    assert pending == 0
    assert seqs == list(range(1, len(seqs) + 1))
