"""Fleet benchmark: `orderbus simulate` against `orderbus up`, with the bus's CPU and memory.

A measurement, not a test: it prints numbers and exits 0 even when a target is missed.

Starts `orderbus up` in a fresh data directory on free ports, samples the bus process's CPU
time and RSS from /proc once a second, runs `orderbus simulate` with the busy-night profile of a chain
(per restaurant 5 printers, 5 tablets, 36 scales, 3 dashboards), and prints the
simulator's report (delivered / lost / duplicated, latency from the order's HTTP response to
the printer printing it) with the bus's CPU (cores) and RSS while the fleet was connected.

Run: python scripts/bench_fleet.py [--restaurants 50] [--orders-per-minute 92] [--duration 120]
                                   [--readings-per-second 100]

Issue 13, the reconnect storm: `--storm` runs the same fleet's connections against a three-node NATS
cluster with our auth callout instead, kills one node with kill -9 and measures how long until every
client is back and every persistent subscriber has the tickets published after the kill (scripts/
fleet_storm.py says exactly what). `--jitter` is the clients' random reconnect pause, `--kill` the node.

    python scripts/bench_fleet.py --storm [--restaurants 50] [--jitter 5] [--kill 1] [--timeout 300]
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
    parser.add_argument("--storm", action="store_true", help="the reconnect storm on a NATS cluster (issue 13)")
    parser.add_argument("--jitter", type=float, default=5.0, help="--storm: reconnect pause, uniform in [0, s]")
    parser.add_argument("--kill", type=int, default=1, help="--storm: the node index to kill -9 (0-based)")
    parser.add_argument("--timeout", type=float, default=300.0, help="--storm: give up on a phase after this long")
    parser.add_argument("--clean-qos", type=int, default=1, help="--storm: scales', dashboards' QoS")
    parser.add_argument("--callout-timeout", type=float, default=2.0, help="--storm: authorization timeout, s")
    parser.add_argument("--responders", type=int, default=1, help="--storm: responder processes (>1: one per node)")
    parser.add_argument("--responder-workers", type=int, default=1, help="--storm: each responder's --workers")
    parser.add_argument(
        "--nats",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="--storm: a NatsLimits field for this run (broker/nats/conf.py), e.g. mqtt_js_api_timeout=30s",
    )
    args = parser.parse_args()
    if args.storm:
        storm(args)
        return

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
                "--api-url": f"http://127.0.0.1:{http}",
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


def storm(args: argparse.Namespace) -> None:
    import asyncio
    import resource

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scripts import fleet_storm
    from scripts.bench_nats import NatsBench

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} cores", flush=True)
    import dataclasses

    from broker.nats.conf import NatsLimits

    limits = NatsLimits()
    for item in args.nats:  # FIELD=VALUE, typed as the field's default
        name, _, value = item.partition("=")
        default = getattr(limits, name)
        typed = value.lower() == "true" if isinstance(default, bool) else type(default)(value)
        limits = dataclasses.replace(limits, **{name: typed})
    bench = NatsBench(
        3,
        auth=True,
        limits=limits,
        callout_timeout=args.callout_timeout,
        responders=args.responders,
        responder_workers=args.responder_workers,
    )
    with bench as nats:
        print(f"cluster up; limits {limits}; callout timeout {args.callout_timeout} s", flush=True)
        print(f"responders: {args.responders} x --workers {args.responder_workers}", flush=True)
        rss = nats.rss_kib()
        report = asyncio.run(
            fleet_storm.run(nats, args.restaurants, args.kill, args.jitter, args.timeout, args.clean_qos)
        )
        report["nodes_rss_mib_before_after"] = [round(rss / 1024), round(nats.rss_kib() / 1024)]
        report["responder_log"] = nats.responder_summary()
    print(json.dumps(report, indent=2))
    settled = report.get("settled_s")
    lost = report.get("storm", {}).get("lost")
    ok = settled is not None and settled <= fleet_storm.SETTLE_TARGET_S and lost == 0
    print(
        f"{'PASS' if ok else 'MISS'} settled {settled if settled is None else round(settled, 1)} s after the kill, "
        f"{lost} tickets lost (target <= {fleet_storm.SETTLE_TARGET_S:g} s, 0 lost)"
    )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
