"""`orderbus cluster up|status` as a developer runs it: the table of addresses, Ctrl-C, remembered ports;
bad input (node count, a file as data dir, a taken port, no or an old nats-server, a second `up` on
the same directory, a broken authorization snippet) gets one line and exit 2, and starts nothing;
kill -9 of `cluster up` takes its nodes with it."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from broker.nats.cluster import Cluster
from broker.nats.layout import Layout
from broker.nats.server import ClusterError
from scripts.ports import free_port
from tests.support import wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")


def _orderbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERBUS, "cluster", *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orderbus: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]


def test_cluster_up_refuses_a_taken_port_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    data_dir.mkdir()
    layout = Layout.load_or_create(data_dir, 1, "127.0.0.1", free_port)  # as a first `cluster up` left it
    taken = layout.ports[0].mqtt
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        result = _orderbus("up", "--nodes", "1", "--data-dir", str(data_dir))
    _one_line_error(result, f"port {taken}", "n1 mqtt", "cluster.json")
    assert not (data_dir / "n1").exists()  # nothing started, nothing written


def test_a_node_that_cannot_start_is_named_with_its_reason(tmp_path: Path) -> None:
    """A wrong authorization snippet (the part a caller plugs in): start-up fails with the node, nats-server's
    own reason and its log, and leaves no node running."""
    broken = Cluster(tmp_path / "nats", 3, auth="accounts { BUS: { jetstream: enabled ", pick_port=free_port)
    with pytest.raises(ClusterError, match=r"node n\d exited with code 1: .*nats\.log") as failed:
        broken.start()
    assert "\n" not in str(failed.value)
    assert not any(node.running for node in broken.nodes)


def test_cluster_up_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    _one_line_error(_orderbus("up", "--nodes", "2", "--data-dir", str(tmp_path / "two")), "--nodes 2", "odd")
    _one_line_error(_orderbus("up", "--nodes", "0", "--data-dir", str(tmp_path / "zero")), "--nodes 0")
    assert not (tmp_path / "two").exists() and not (tmp_path / "zero").exists()

    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    _one_line_error(_orderbus("up", "--data-dir", str(a_file)), "is a file")
    assert a_file.read_text() == "not a directory"

    missing = _orderbus("up", "--data-dir", str(tmp_path / "d"), env={"ORDERBUS_NATS_SERVER": str(tmp_path / "nope")})
    _one_line_error(missing, "no nats-server", "pip install 'orderbus[nats]'")

    too_old = tmp_path / "old-nats-server"  # what the machine's own 2.9 would say
    too_old.write_text("#!/bin/sh\necho 'nats-server: v2.9.20'\n")
    too_old.chmod(0o755)
    _one_line_error(
        _orderbus("up", "--data-dir", str(tmp_path / "d"), "--nats-server", str(too_old)), "v2.9.20", "2.15"
    )

    _one_line_error(_orderbus("status", "--data-dir", str(tmp_path / "never")), "no cluster")


def test_cluster_up_in_the_foreground_until_ctrl_c(tmp_path: Path) -> None:
    """The command a developer runs: the table of addresses, a working node, status, Ctrl-C stops it;
    a second `up` finds the same ports in the data directory."""
    data_dir = tmp_path / "nats"
    for attempt in range(2):
        process = subprocess.Popen(
            [ORDERBUS, "cluster", "up", "--nodes", "1", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert process.stdout is not None
            shown = []
            for line in process.stdout:
                shown.append(line)
                if "Ctrl-C to stop" in line:
                    break
            text = "".join(shown)
            layout = Layout.load(data_dir)
            ports = layout.ports[0]
            assert f"mqtt://127.0.0.1:{ports.mqtt}" in text and f"ws://127.0.0.1:{ports.websocket}/mqtt" in text, text
            if attempt == 0:
                first = layout
            assert layout == first  # remembered, not chosen again
            assert httpx.get(f"http://127.0.0.1:{ports.monitor}/healthz", timeout=5).status_code == 200
            status = _orderbus("status", "--data-dir", str(data_dir))
            assert status.returncode == 0 and "2.15.1" in status.stdout, status.stdout + status.stderr
        finally:
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=30)
        assert process.returncode == 0, out
        assert "stopped." in out
        wait_for(functools.partial(_refused, ports.monitor), timeout=10)  # the node is gone with it
    down = _orderbus("status", "--data-dir", str(data_dir))
    assert down.returncode == 1 and "down" in down.stdout


def test_kill_9_of_cluster_up_takes_its_nodes_with_it(tmp_path: Path) -> None:
    """`cluster up` killed with no chance to stop its nodes: they get SIGTERM from the kernel (parent-death
    signal) instead of lingering on the ports, and the next `cluster up` in that directory starts."""
    data_dir = tmp_path / "nats"
    process = subprocess.Popen(
        [ORDERBUS, "cluster", "up", "--nodes", "1", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "Ctrl-C to stop" in line:
            break
    monitor = Layout.load(data_dir).ports[0].monitor
    assert not _refused(monitor)
    twice = _orderbus("up", "--nodes", "1", "--data-dir", str(data_dir))  # a second one on the same directory
    _one_line_error(twice, "already running", "cluster status")
    process.kill()
    process.communicate(timeout=10)
    wait_for(functools.partial(_refused, monitor), timeout=15)

    again = subprocess.Popen(
        [ORDERBUS, "cluster", "up", "--nodes", "1", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert again.stdout is not None
        assert any("Ctrl-C to stop" in line for line in again.stdout), "the second cluster up did not start"
        assert not _refused(monitor)
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=30)
    assert again.returncode == 0


def _refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.HTTPError:
        return True
    return False
