"""`orderbus simulate` as a user runs it: a small fleet against a running bus, and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.support import Stack, free_port, wait_for

pytestmark = pytest.mark.e2e
ORDERBUS = [str(Path(sys.executable).parent / "orderbus")]


def simulate(stack: Stack, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    settings = stack.settings
    command = [
        *ORDERBUS, "simulate", "--data-dir", str(data_dir or settings.data_dir),
        "--api-url", stack.base_url, "--mqtt-port", str(settings.mqtt_port), "--ws-port", str(settings.ws_port), *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_a_small_fleet_gets_every_ticket_and_order_once(stack: Stack, tmp_path: Path):
    report_file = tmp_path / "report.json"
    result = simulate(
        stack,
        *("--restaurants", "2", "--printers", "2", "--tablets", "2", "--scales", "2", "--dashboards", "2"),
        *("--orders-per-minute", "240", "--duration", "5", "--readings-per-second", "4", "--drain", "15"),
        *("--json", str(report_file)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_file.read_text())
    assert report["orders_placed"] >= 15 and report["order_errors"] == {}
    assert report["fleet"] == {"restaurants": 2, "printers": 4, "tablets": 4, "scales": 4, "dashboards": 4}
    for kind in ("printed", "tablets", "dashboards"):
        assert report[kind]["expected"] > 0
        assert report[kind]["delivered"] == report[kind]["expected"], kind
        assert (report[kind]["lost"], report[kind]["duplicated"], report[kind]["unexpected"]) == (0, 0, 0), kind
    assert report["tablets"]["expected"] > report["printed"]["expected"]  # tablets see every station
    assert report["bumps"]["ack"] == report["orders_placed"]  # the first tablet bumped each order once
    assert report["readings_sent"] > 0 and report["device_errors"] == {}
    assert "delivered" in result.stdout and "lost" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--restaurants", "0"), "restaurants"),
        (("--orders-per-minute", "-5"), "orders-per-minute"),
        (("--duration", "soon"), "duration"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(stack: Stack, args: tuple[str, ...], message: str):
    result = simulate(stack, *args)
    assert result.returncode == 2 and message in result.stderr


def test_a_bus_that_is_not_there_or_a_wrong_key_is_a_clear_error(stack: Stack, tmp_path: Path):
    nothing = subprocess.run(
        [*ORDERBUS, "simulate", "--data-dir", str(stack.settings.data_dir), "--api-url", f"http://127.0.0.1:{free_port()}",
         "--mqtt-port", str(stack.settings.mqtt_port), "--duration", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert nothing.returncode == 2 and "cannot seed the fleet" in nothing.stderr
    wrong_key = simulate(stack, "--duration", "1", data_dir=tmp_path / "elsewhere")
    assert wrong_key.returncode == 2 and "401" in wrong_key.stderr


def simulated_devices(stack: Stack) -> list:
    with stack.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, presence, revoked FROM device WHERE id LIKE 'sim%' ORDER BY id")
        ).all()
    return list(rows)


def test_with_keep_the_devices_stay_registered_and_none_reads_online_once_it_ended(stack: Stack, tmp_path: Path):
    """The fleet's devices said `offline` as they stopped (a clean DISCONNECT sends no Last Will), so the ops
    page's online count matches the broker's connections again; progress lines came while it ran."""
    report_file = tmp_path / "report.json"
    result = simulate(
        stack,
        *("--restaurants", "1", "--printers", "1", "--tablets", "1", "--scales", "1", "--dashboards", "0"),
        *("--orders-per-minute", "120", "--duration", "3", "--readings-per-second", "2", "--drain", "10"),
        *("--keep", "--progress-every", "1", "--json", str(report_file)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders " in result.stderr and "printed " in result.stderr  # a progress line
    report = json.loads(report_file.read_text())
    assert report["archived"] == {"restaurants": 0, "devices_revoked": 0}
    assert set(report["broker_drops"]) >= {"rate_limit", "queue_full"}  # read from /metrics before and after
    rows = simulated_devices(stack)
    assert len(rows) == 3
    assert [row.presence for row in rows] == ["offline"] * 3
    assert not any(row.revoked for row in rows)
    online, connected = device_counts(stack)
    assert online == connected == 0  # the ops summary's online devices match the broker's device connections


def device_counts(stack: Stack) -> tuple[int, int]:
    """(devices online, device connections) as the ops summary reports them."""
    summary = httpx.get(f"{stack.base_url}/api/v1/ops/summary").json()
    online = sum(counts.get("online", 0) for counts in summary["devices"].values())
    by_role = summary["connections"]["by_role"]
    return online, sum(by_role.get(kind, 0) for kind in ("printer", "tablet", "scale"))


def test_a_killed_simulator_leaves_its_devices_lost_not_online(stack: Stack, tmp_path: Path):
    """kill -9: no `offline`, no DISCONNECT; the broker publishes each device's Last Will and ingest records it."""
    settings = stack.settings
    command = [
        *ORDERBUS, "simulate", "--data-dir", str(settings.data_dir), "--api-url", stack.base_url,
        "--mqtt-port", str(settings.mqtt_port), "--ws-port", str(settings.ws_port),
        "--restaurants", "1", "--printers", "1", "--tablets", "1", "--scales", "1", "--dashboards", "0",
        "--orders-per-minute", "30", "--duration", "120", "--keep",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: [r.presence for r in simulated_devices(stack)] == ["online"] * 3, timeout=60, interval=0.2)
        assert device_counts(stack) == (3, 3)
    finally:
        process.kill()
        process.wait(timeout=15)
    wait_for(lambda: [r.presence for r in simulated_devices(stack)] == ["lost"] * 3, timeout=30, interval=0.2)
    assert device_counts(stack) == (0, 0)


def test_without_keep_the_simulated_restaurants_are_archived_and_their_devices_revoked(stack: Stack, tmp_path: Path):
    report_file = tmp_path / "report.json"
    result = simulate(
        stack,
        *("--restaurants", "1", "--printers", "1", "--tablets", "1", "--scales", "0", "--dashboards", "0"),
        *("--orders-per-minute", "120", "--duration", "2", "--drain", "10", "--json", str(report_file)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report_file.read_text())["archived"] == {"restaurants": 1, "devices_revoked": 2}
    rows = simulated_devices(stack)
    assert len(rows) == 2 and all(row.revoked for row in rows)
    with stack.http(stack.api_token("ops", "super_admin", None)) as http:
        listed = http.get("/restaurants").json()["data"]
    assert not [r for r in listed if r["name"].startswith("sim ")], listed  # out of the lists (the picker)
    with stack.engine.connect() as connection:
        sims = connection.execute(text("SELECT archived_at FROM restaurant WHERE name LIKE 'sim %'")).all()
    assert len(sims) == 1 and sims[0][0] is not None  # archived, not deleted: its orders stay history
    metrics = httpx.get(f"{stack.base_url}/metrics").text
    online = [
        line for line in metrics.splitlines() if line.startswith("orderbus_devices{") and 'presence="online"' in line
    ]
    assert all(line.endswith(" 0.0") for line in online), online


def test_a_scale_over_its_rate_limit_sees_its_drops_reported_and_still_ends_offline(stack: Stack, tmp_path: Path):
    """50 readings/s from one scale against the broker's 20/s per device: the report counts the drops, and
    the scale's last `offline` is not one of them (presence has a bucket of its own)."""
    report_file = tmp_path / "report.json"
    result = simulate(
        stack,
        *("--restaurants", "1", "--printers", "1", "--tablets", "0", "--scales", "1", "--dashboards", "0"),
        *("--orders-per-minute", "60", "--duration", "4", "--readings-per-second", "50", "--drain", "10"),
        *("--keep", "--json", str(report_file)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_file.read_text())
    assert report["broker_drops"]["rate_limit"] > 0
    assert "broker_drops" in result.stdout
    # ingest works through the readings first; the `offline` comes last
    wait_for(lambda: [row.presence for row in simulated_devices(stack)] == ["offline", "offline"], timeout=30)
    assert device_counts(stack) == (0, 0)
