"""`orderbus simulate` as a user runs it: a small fleet against a running bus, and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Stack, free_port

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
