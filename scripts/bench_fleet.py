"""Fleet benchmark: `orderbus simulate` against `orderbus up`, with the bus's CPU and memory.

A measurement, not a test: it prints numbers and exits 0 even when a target is missed.

Starts `orderbus up` in a fresh data directory on free ports, samples the bus process's CPU
time and RSS from /proc once a second, runs `orderbus simulate` with the busy-night profile of a chain
(per restaurant 5 printers, 5 tablets, 36 scales, 3 dashboards), and prints the
simulator's report (delivered / lost / duplicated, latency from the order's HTTP response to
the printer printing it) with the bus's CPU (cores) and RSS while the fleet was connected.

Run: python scripts/bench_fleet.py [--restaurants 50] [--orders-per-minute 92] [--duration 120]
                                   [--readings-per-second 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProcessSampler(threading.Thread):
    """CPU seconds and RSS of one process, once a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, rss bytes)
        self.stop = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                rss = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except FileNotFoundError:
                return
            self.samples.append((time.monotonic(), (int(stat[11]) + int(stat[12])) / self.tick, rss))

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        cores = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
        return {
            "cpu_cores": round(cores, 3),
            "rss_mib_start": round(inside[0][2] / 2**20, 1),
            "rss_mib_peak": round(max(s[2] for s in inside) / 2**20, 1),
            "rss_mib_end": round(inside[-1][2] / 2**20, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restaurants", type=int, default=50)
    parser.add_argument("--printers", type=int, default=5)
    parser.add_argument("--tablets", type=int, default=5)
    parser.add_argument("--scales", type=int, default=36)
    parser.add_argument("--dashboards", type=int, default=3)
    parser.add_argument("--orders-per-minute", type=float, default=92.0)  # 110 checks/h x 50 sites
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--readings-per-second", type=float, default=100.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        data = Path(tmp) / "data"
        http, mqtt, ws = free_port(), free_port(), free_port()
        bus = subprocess.Popen(
            [
                BIN / "orderbus",
                "up",
                "--data-dir",
                data,
                "--http-port",
                str(http),
                "--mqtt-port",
                str(mqtt),
                "--ws-port",
                str(ws),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "bus.log", "w"),  # noqa: SIM115 - lives as long as the process
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            sampler = ProcessSampler(bus.pid)
            sampler.start()
            report_file = Path(tmp) / "report.json"
            options = {
                "--data-dir": data,
                "--url": f"http://127.0.0.1:{http}",
                "--mqtt-port": mqtt,
                "--ws-port": ws,
                "--restaurants": args.restaurants,
                "--printers": args.printers,
                "--tablets": args.tablets,
                "--scales": args.scales,
                "--dashboards": args.dashboards,
                "--orders-per-minute": args.orders_per_minute,
                "--duration": args.duration,
                "--readings-per-second": args.readings_per_second,
                "--json": report_file,
            }
            started = time.monotonic()
            simulate = subprocess.Popen([BIN / "orderbus", "simulate", *(str(x) for kv in options.items() for x in kv)])
            simulator = ProcessSampler(simulate.pid)
            simulator.start()
            simulate.wait()
            ended = time.monotonic()
            sampler.stop.set()
            simulator.stop.set()
            usage = {"bus": sampler.window(started, ended), "simulator": simulator.window(started, ended)}
            report = json.loads(report_file.read_text()) if report_file.exists() else {}
            metrics = httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=10).text
        finally:
            bus.terminate()
            bus.wait(30)
            shutil.copy(Path(tmp) / "bus.log", "/tmp/bench-fleet-bus.log")
    rejected = [line for line in metrics.splitlines() if line.startswith("orderbus_ingest_rejected_total")]
    tickets = [line for line in metrics.splitlines() if line.startswith("orderbus_tickets_total")]
    print(json.dumps({"simulate_exit": simulate.returncode, **usage}, indent=2))
    print("\n".join(tickets + rejected))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
