"""`orderbus up --demo`'s banner: every demo device command runs as printed and its device comes online.

The commands are read from the banner itself (built by cli/demo_banner.py), never copied here: each mints its
token through the device's record, finds this bus's broker and API, and the scale's first reading is taken."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.test_cli import Up, login, start_up
from tests.support import wait_for

BIN = str(Path(sys.executable).parent)


def banner_commands(up: Up) -> dict[str, str]:
    """device id → its command, from the lines under "demo devices"."""
    lines = up.output().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("demo devices"))
    commands = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        device_id, command = line.split(None, 1)
        commands[device_id] = command
    return commands


def run(command: str, cwd: Path) -> subprocess.Popen[bytes]:
    """As a shell in a terminal runs it: `orderbus` on PATH, and a terminal for the KDS's screen."""
    _parent, child = pty.openpty()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TERM": "xterm", "COLUMNS": "160", "LINES": "40"}
    return subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=child, stdout=child, stderr=child)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_every_demo_device_command_runs_as_printed(tmp_path):
    up = start_up(tmp_path / "data")
    agents: list[subprocess.Popen[bytes]] = []
    try:
        commands = banner_commands(up)
        assert set(commands) == {"kds-kitchen-1", "printer-bar-1", "printer-grill-1", "scale-patty-1"}
        admin, rid = login(up)
        agents = [run(command, tmp_path) for command in commands.values()]

        def online() -> set[str]:
            listed = admin.get(f"/restaurants/{rid}/devices").json()["data"]
            return {device["id"] for device in listed if device["presence"] == "online"}

        wait_for(lambda: online() == set(commands), timeout=60)
        assert all(agent.poll() is None for agent in agents)
        metrics = f"http://127.0.0.1:{up.http_port}/metrics"
        wait_for(lambda: metric(httpx.get(metrics).text, 'orderbus_ingest_processed_total{kind="readings"}') >= 1)
        assert metric(httpx.get(metrics).text, 'orderbus_ingest_rejected_total{reason="not_whole"}') == 0
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(timeout=30)
        assert up.stop() == 0


def readme_device_walk() -> str:
    """The README's "Devices and security" shell blocks: registering devices, then running their agents."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Devices and security", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return "\n".join(block for block in blocks if "orderbus simulate" not in block)


def test_the_readme_device_walk_runs_as_written_under_demo(tmp_path):
    """Under `orderbus up --demo`, with `BUS` and `MQTT_PORT` as the banner's `export` line sets them."""
    up = start_up(tmp_path / "data")
    admin, rid = login(up)
    walk = readme_device_walk()
    assert "$PRINTER" in walk and "$TABLET" in walk and "$SCALE" in walk
    api_token = admin.headers["authorization"].removeprefix("Bearer ")
    _parent, child = pty.openpty()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TERM": "xterm", "API": api_token}
    env |= {"BUS": f"http://127.0.0.1:{up.http_port}", "MQTT_PORT": str(up.mqtt_port)}
    shell = subprocess.Popen(
        ["bash", "-c", walk], cwd=tmp_path, env=env, stdin=child, stdout=child, stderr=child, start_new_session=True
    )
    try:
        walked = {"printer-bar-2", "kds-bar-1", "scale-patty-2"}

        def online() -> set[str]:
            listed = admin.get(f"/restaurants/{rid}/devices").json()["data"]
            return {device["id"] for device in listed if device["presence"] == "online"}

        wait_for(lambda: walked <= online(), timeout=60)
        assert shell.poll() is None
    finally:
        os.killpg(shell.pid, 15)
        shell.wait(timeout=30)
        assert up.stop() == 0
