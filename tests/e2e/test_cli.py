"""The real `orderbus` command: demo start-up, tokens, mosquitto_sub, port clashes, clean shutdown."""

from __future__ import annotations

import json
import os
import re
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
    assert credentials["email"] in up.output() and credentials["password"] not in up.output()
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
        items = admin.get(f"/restaurants/{rid}/menu-items").json()["data"]
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
        assert password not in second.output()
        admin, rid = login(second)
        assert admin.get(f"/restaurants/{rid}/categories").json()["count"] == 2
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
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.splitlines() == [
        f"orderbus: error: port {port} on 127.0.0.1 is already in use; choose another with --mqtt-port"
    ]
    assert not (tmp_path / "d").exists()  # nothing was set up


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
    assert bad_role.returncode == 2 and "'chef' is not one of" in bad_role.stderr
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
    items = admin.get(f"/restaurants/{rid}/menu-items").json()["data"]
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


def test_the_banner_says_where_to_look_and_never_the_password(up: Up):
    out = up.output()
    password = json.loads((up.data_dir / "demo-credentials.json").read_text())["password"]
    assert password not in out
    base = f"http://127.0.0.1:{up.http_port}"
    assert f"dashboard     {base}/" in out and f"ops           {base}/ops.html" in out
    assert f"password in {up.data_dir / 'demo-credentials.json'}" in out
    # the printed login command works as printed: it reads the password from the credentials file
    login_line = next(line for line in out.splitlines() if line.strip().startswith("login "))
    command = login_line.strip().removeprefix("login").strip()
    answer = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(answer.stdout)["access_token"]
    # the device commands name the ports in use
    printer = next(line for line in out.splitlines() if "orderbus device printer" in line)
    assert f"--mqtt-port {up.mqtt_port}" in printer and f"--api-url {base}" in printer
    assert all(f"--mqtt-port {up.mqtt_port}" in line for line in out.splitlines() if "orderbus device" in line)


@pytest.fixture
def default_ports_taken() -> Iterator[dict[str, int]]:
    """The default MQTT and WebSocket ports (1883, 8083) taken: by Mosquitto or whoever holds them on this
    machine, else by this test."""
    from config.settings import Settings

    held = []
    defaults = {name: Settings.model_fields[name].default for name in ("mqtt_port", "ws_port")}
    for port in defaults.values():
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
            held.append(probe)
        except OSError:  # someone holds it already: that is the case under test
            probe.close()
    try:
        yield defaults
    finally:
        for probe in held:
            probe.close()


def test_demo_replaces_taken_default_ports_and_says_so(tmp_path, default_ports_taken):
    http_port = free_port()
    log = tmp_path / "up.log"
    args = [ORDERBUS, "up", "--demo", "--data-dir", str(tmp_path / "data"), "--http-port", str(http_port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERBUS_")}
    with log.open("w") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for(lambda: "Ctrl-C to stop" in log.read_text() or process.poll() is not None, timeout=30)
        out = log.read_text()
        assert process.poll() is None, out
        mqtt = re.search(r"mqtt://127\.0\.0\.1:(\d+)  \(port (\d+) is taken: --demo uses (\d+)", out)
        ws = re.search(r"ws://127\.0\.0\.1:(\d+)/mqtt  \(port (\d+) is taken: --demo uses (\d+)", out)
        assert mqtt and ws, out
        assert int(mqtt[2]) == default_ports_taken["mqtt_port"] and mqtt[1] == mqtt[3]
        assert int(ws[2]) == default_ports_taken["ws_port"] and ws[1] == ws[3]
        mqtt_port, ws_port = int(mqtt[1]), int(ws[1])
        assert len({mqtt_port, ws_port, http_port, *default_ports_taken.values()}) == 5
        assert f"MQTT_PORT={mqtt_port} WS_PORT={ws_port}" in out  # the README's walk exports these
        assert f"--mqtt-port {mqtt_port}" in out and "--mqtt-port 1883" not in out
        # the dashboard connects to the WebSocket port in use
        assert httpx.get(f"http://127.0.0.1:{http_port}/api/v1/config", timeout=5).json()["ws_port"] == ws_port
        # a client on the port the banner printed is a client of this bus
        up = Up(process, tmp_path / "data", http_port, mqtt_port, ws_port, log)
        _admin, rid = login(up)
        watcher = token(up.data_dir, "--sub", "watcher", "--restaurant", str(rid), "--role", "staff")
        heard = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-i", "watcher", "-u", "watcher", "-P", watcher,
             "-t", f"restaurant/{rid}/inventory/#", "-C", "1", "-W", "20"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert heard.returncode == 0 and heard.stdout, heard.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def readme_blocks(after: str) -> str:
    """The first ```sh block of the README after the sentence `after`."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    rest = text[text.index(after) :]
    return rest.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_walk_works_on_the_ports_in_use(tmp_path, default_ports_taken):
    """`orderbus up --demo` where the default MQTT and WebSocket ports are taken, then the README's second and
    third terminals as written, after the banner's `export` line."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])  # the README runs .venv/bin/orderbus
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERBUS_")}
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [ORDERBUS, "up", "--demo", "--http-port", str(http_port)],
            cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
    try:
        wait_for(lambda: "Ctrl-C to stop" in log.read_text() or process.poll() is not None, timeout=30)
        assert process.poll() is None, log.read_text()
        export = next(line.strip().removeprefix("in a shell").strip() for line in log.read_text().splitlines()
                      if line.strip().startswith("in a shell"))  # fmt: skip
        second = readme_blocks("In a second terminal").replace(" -v\n", " -v -C 1 -W 20\n")
        third = readme_blocks("In a third terminal")
        script = f"set -e\n{export}\n{second}\necho\n{third}\n"
        walk = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=90)
        assert walk.returncode == 0, (walk.stdout, walk.stderr)
        assert re.search(r"^restaurant/1/\S+ \{", walk.stdout, re.MULTILINE), walk.stdout  # a retained message
        assert '"table_name":"T4"' in walk.stdout and '"status":"preparing"' in walk.stdout, walk.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
