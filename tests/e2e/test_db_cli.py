"""`orderbus db upgrade|current` and the start-up checks, through the real command: a data
directory of the release before migrations, parts run apart that refuse an old schema, and
database URLs that cannot work, each answered with one line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from core import db
from tests.integration.test_migrations import release_data_dir
from tests.support import free_port, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")
RELEASE_DEMO_LOGIN = {"email": "admin@demo.orderbus.dev", "password": "PEC_NX0YUwtmDIvX"}  # of the frozen data dir

pytestmark = pytest.mark.e2e


def orderbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERBUS, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, nothing but one `orderbus: error:` line on stderr."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orderbus: error: "), result.stderr
    return lines[0]


def has_version_table(path: Path) -> bool:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() is not None


def test_db_current_and_two_upgrades_at_once(tmp_path):
    """Two `orderbus db upgrade` on one SQLite file take turns: one creates the schema, the other finds it done."""
    data_dir = str(tmp_path / "data")
    assert orderbus("db", "current", "--data-dir", data_dir).stdout == f"none (this orderbus needs {db.head()})\n"
    args = [ORDERBUS, "db", "upgrade", "--data-dir", data_dir]
    both = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*process.communicate(timeout=60), process.returncode) for process in both]
    assert [code for _out, _err, code in results] == [0, 0], results
    outputs = sorted(out for out, _err, _code in results)
    assert f"schema at {db.head()}, nothing to do" in outputs[0]
    assert f"schema upgraded from nothing to {db.head()}" in outputs[1]
    assert orderbus("db", "current", "--data-dir", data_dir).stdout == f"{db.head()} (this orderbus's schema)\n"


def test_api_refuses_a_release_data_dir_until_db_upgrade_then_serves_its_orders(tmp_path):
    data_dir = tmp_path / "data"
    path = release_data_dir(data_dir)
    http_port = str(free_port())
    refused = one_line_error(orderbus("api", "--data-dir", str(data_dir), "--http-port", http_port))
    assert f"schema is from before migrations, this orderbus needs {db.head()}" in refused
    assert f"run `orderbus db upgrade --data-dir {data_dir}`" in refused
    bridge = one_line_error(orderbus("bridge", "--data-dir", str(data_dir), "--mqtt-port", str(free_port())))
    assert "orderbus db upgrade" in bridge
    assert not has_version_table(path)  # refusing changed nothing

    assert orderbus("db", "upgrade", "--data-dir", str(data_dir)).returncode == 0
    log = tmp_path / "api.log"
    with log.open("w") as sink:
        api = subprocess.Popen(
            [ORDERBUS, "api", "--data-dir", str(data_dir), "--http-port", http_port], stdout=sink, stderr=sink
        )
    try:
        base = f"http://127.0.0.1:{http_port}/api/v1"
        wait_for(lambda: api.poll() is not None or "Ctrl-C to stop" in log.read_text(), timeout=30)
        assert api.poll() is None, log.read_text()
        token = httpx.post(f"{base}/auth/login", json=RELEASE_DEMO_LOGIN).json()["access_token"]
        order = httpx.get(f"{base}/restaurants/1/orders/1", headers={"authorization": f"Bearer {token}"}).json()
        assert (order["status"], order["table_name"], order["items"][0]["modifiers"]) == (
            "preparing",
            "T4",
            ["no onion"],
        )
    finally:
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0


def test_up_upgrades_a_release_data_dir_at_start(tmp_path):
    data_dir = tmp_path / "data"
    path = release_data_dir(data_dir)
    ports = {flag: str(free_port()) for flag in ("--http-port", "--mqtt-port", "--ws-port")}
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        up = subprocess.Popen(
            [ORDERBUS, "up", "--data-dir", str(data_dir), *(x for pair in ports.items() for x in pair)],
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_for(lambda: up.poll() is not None or "Ctrl-C to stop" in log.read_text(), timeout=30)
        assert up.poll() is None, log.read_text()
        base = f"http://127.0.0.1:{ports['--http-port']}/api/v1"
        token = httpx.post(f"{base}/auth/login", json=RELEASE_DEMO_LOGIN).json()["access_token"]
        events = httpx.get(f"{base}/restaurants/1/events", headers={"authorization": f"Bearer {token}"}).json()
        seqs = [event["seq"] for event in events]  # the release's 15, then what this start added
        assert len(seqs) >= 15 and seqs == list(range(1, len(seqs) + 1))
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
    assert has_version_table(path)


BAD_URLS = {
    "sqlite:///{tmp}": "cannot open the database",  # the file is a directory
    "sqlite:///{tmp}/missing/dir/x.db": "cannot open the database",
    "postgresql+psycopg://orderbus:s3cret@127.0.0.1:{closed}/orderbus": "postgresql",
    "not a url": "is not a usable database URL",
    "mysql+nodriver://orderbus:s3cret@127.0.0.1/orderbus": "is not a usable database URL",
}


def test_a_database_url_that_cannot_work_is_one_line(tmp_path):
    """`orderbus db` in this process (the same typer app, no process start per case)."""
    runner = CliRunner()
    for template, says in BAD_URLS.items():
        url = template.format(tmp=tmp_path, closed=free_port())
        for command in ("current", "upgrade"):
            result = runner.invoke(app, ["db", command, "--database-url", url])
            assert result.exit_code == 2, (url, result.output, result.exception)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("orderbus: error: "), (url, result.stderr)
            assert says in lines[0], (url, result.stderr)
            assert "--database-url" in lines[0] and "s3cret" not in lines[0]


def test_api_on_a_database_url_that_cannot_work_is_one_line(tmp_path):
    for url in (f"sqlite:///{tmp_path}", f"postgresql+psycopg://orderbus:s3cret@127.0.0.1:{free_port()}/orderbus"):
        args = ("api", "--data-dir", str(tmp_path / "data"), "--http-port", str(free_port()))
        result = orderbus(*args, env={"ORDERBUS_DATABASE_URL": url})
        line = one_line_error(result)
        assert "cannot open the database" in line or "no driver" in line
        assert "ORDERBUS_DATABASE_URL" in line and "s3cret" not in line
