"""The chaos run's short version as CI runs it: kill -9 of `orderbus up`, of the broker and of the bridge
run apart, under steady orders; every accepted order reaches every subscriber (MQTT or catch-up by seq),
and nothing the run started is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (the run's temporary directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_short_chaos_run_loses_no_accepted_order_and_leaves_no_process(tmp_path: Path):
    report = tmp_path / "rows.json"
    workdirs = tmp_path / "runs"
    workdirs.mkdir()
    env = {**os.environ, "TMPDIR": str(workdirs), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--short", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=420,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    rows = json.loads(report.read_text())
    assert [row["scenario"] for row in rows] == ["up-kill-process", "split-kill-broker", "split-kill-bridge"]
    for row in rows:
        assert row["lost"] == 0 and row["dup_new"] == 0, row
        assert row["accepted"] > 0 and row["mqtt"] + row["by_seq"] == row["accepted"], row
        assert row["in_events"] == row["accepted"] and row["events_ok"], row
    lines = result.stdout.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    lost = header.index("lost")
    assert [line.strip("|").split("|")[lost].strip() for line in lines[2:5]] == ["0", "0", "0"]
    assert _processes_mentioning(str(workdirs)) == []
    assert list(workdirs.glob("chaos-*")) == []  # each scenario's directory removed
