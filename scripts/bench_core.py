"""Core benchmark: order → subscriber latency, and what the relay costs in orders/s.

A measurement, not a test: it prints numbers and exits 0 even when a target is missed.

  A) latency: `orderbus up --demo` on free ports; one persistent HTTP client POSTs orders at a
     steady rate (monotonic schedule); a paho subscriber on restaurant/{rid}/orders (QoS 1)
     timestamps each new_order. Latency = t_received - t_response (both time.perf_counter()
     in this process). Percentiles are nearest-rank over the latencies clamped at 0; the raw
     (signed) minimum and the number of negative samples are printed too.
  B) throughput: a fixed number of orders POSTed as fast as K threads can, each with its own
     httpx.Client, against `orderbus up --demo` ("on": broker + API + relay) and against
     `orderbus api` alone ("off": no relay, no broker; the data dir is seeded by a short
     `orderbus up --demo` first). Fresh data dir per measurement; on, off, on, off, …;
     medians reported.

  --split: A) twice, against `orderbus up` and against the parts run apart (`orderbus broker`,
     `orderbus bridge`, `orderbus api` as three processes on one data dir, seeded by a short
     `orderbus up --demo`), one table side by side; B) is left out.

  --scale-api (issue 13): orders/s with one and with two `orderbus api` processes on one PostgreSQL
     database (a fresh database on ORDERBUS_BENCH_POSTGRES, default postgresql://postgres@127.0.0.1:5432/
     postgres; `orderbus db upgrade`; seeded by a short `orderbus up --demo` on it, then dropped at the end).
     The same K client threads post to every API process in turn (thread i to process i mod N); rounds
     alternate one, two; the medians and two / one are printed (target >= 1.6). On a 2-core machine the
     load generator, PostgreSQL and the API processes share the cores: the busy share of each is printed.

Run: python scripts/bench_core.py [--orders 1000] [--rate 20] [--throughput-orders 500] [--concurrency 4]
                                  [--rounds 2] [--warmup 20] [--keep] [--split]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core import topics

API = "/api/v1"
HOST = "127.0.0.1"
P99_TARGET_MS = 20.0
RELAY_COST_TARGET = 0.20
LOSS_WAIT_S = 5.0


# ---------------------------------------------------------------- processes


def orderbus_command() -> list[str]:
    beside = Path(sys.executable).parent / "orderbus"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("orderbus")
    if found:
        return [found]
    return [sys.executable, "-m", "cli.main"]


def code_under_test() -> str:
    """Where the `orderbus` subprocesses import the project from, and its git state (the install is editable)."""
    probe = "import pathlib, cli.main; print(pathlib.Path(cli.main.__file__).resolve().parents[1])"
    try:
        root = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd="/"
        ).stdout.strip()
        state = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return f"{root} (git {state.stdout.strip()})" if state.returncode == 0 else f"{root} (not a git checkout)"


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all sockets stay bound until every port is picked."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    proc: subprocess.Popen
    log_path: Path
    data_dir: Path
    http_port: int
    mqtt_port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, wait, SIGKILL on timeout."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def orderbus(mode: str, data_dir: Path, *, demo: bool = False, env: dict[str, str] | None = None):
    """Run `orderbus up` or `orderbus api` on free ports; yield once /healthz answers; always stop it."""
    http_port, mqtt_port, ws_port = free_ports(3)
    args = [*orderbus_command(), mode, "--data-dir", str(data_dir), "--http-port", str(http_port)]
    if mode == "up":
        args += ["--mqtt-port", str(mqtt_port), "--ws-port", str(ws_port)]
        if demo:
            args.append("--demo")
    log_path = data_dir.parent / f"{data_dir.name}-{mode}-{http_port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = Server(proc, log_path, data_dir, http_port, mqtt_port if mode == "up" else None)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop_process(proc)


@contextmanager
def split_orderbus(data_dir: Path):
    """`orderbus broker`, `orderbus bridge` and `orderbus api` as separate processes on one data dir
    (seeded with the demo first); yield the API's server once /healthz answers; always stop all three."""
    with orderbus("up", data_dir, demo=True) as seeder:
        login(seeder)  # the demo is committed once its admin can log in and see the menu
    http_port, mqtt_port, ws_port = free_ports(3)
    parts = {
        "broker": ["--mqtt-port", str(mqtt_port), "--ws-port", str(ws_port)],
        "bridge": ["--mqtt-port", str(mqtt_port)],
        "api": ["--http-port", str(http_port)],
    }
    procs: list[subprocess.Popen] = []
    try:
        for mode, flags in parts.items():
            log_path = data_dir.parent / f"{data_dir.name}-{mode}-{http_port}.log"
            with open(log_path, "ab") as log:
                args = [*orderbus_command(), mode, "--data-dir", str(data_dir), *flags]
                procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        server = Server(procs[-1], log_path, data_dir, http_port, mqtt_port)
        wait_healthy(server, timeout=180)  # three interpreters starting at once on a busy machine
        yield server
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def wait_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"orderbus exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.base_url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"/healthz did not answer within {timeout:.0f} s:\n{server.log_tail()}")


@dataclass
class Session:
    access_token: str
    restaurant_id: int
    item_id: int


def login(server: Server, timeout: float = 60.0) -> Session:
    """Demo credentials → API token → an item without stock tracking (demo is seeded after /healthz is up)."""
    creds_path = server.data_dir / "demo-credentials.json"
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"orderbus exited with {server.proc.returncode}:\n{server.log_tail()}")
            try:
                creds = json.loads(creds_path.read_text())
                r = http.post(API + "/auth/login", json={"email": creds["email"], "password": creds["password"]})
                if r.status_code == 200:
                    body = r.json()
                    token, rid = body["access_token"], body["restaurant_id"]
                    items = http.get(
                        f"{API}/restaurants/{rid}/menu-items", headers={"Authorization": f"Bearer {token}"}
                    )
                    items.raise_for_status()
                    untracked = [i for i in items.json()["data"] if not i["enable_stock_tracking"]]
                    if untracked:
                        return Session(token, rid, untracked[0]["id"])
                    last = "no menu item without stock tracking yet"
                else:
                    last = f"login {r.status_code}: {r.text[:200]}"
            except (OSError, ValueError, KeyError, httpx.HTTPError) as exc:
                last = repr(exc)
            time.sleep(0.2)
    raise RuntimeError(f"could not log in to the demo restaurant: {last}\n{server.log_tail()}")


def order_body(item_id: int) -> dict:
    return {"items": [{"menu_item_id": item_id, "quantity": 1}]}


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


# ---------------------------------------------------------------- A) latency


@dataclass
class Subscriber:
    received: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    other: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: threading.Event = field(default_factory=threading.Event)
    sub_error: str = ""

    def on_message(self, _c, _u, msg) -> None:
        t = time.perf_counter()
        try:
            env = json.loads(msg.payload)
            if env.get("type") != "new_order":
                self.other += 1
                return
            order_id = env["data"]["order"]["id"]
        except (ValueError, KeyError, TypeError):
            self.other += 1
            return
        with self.lock:
            self.received[order_id].append(t)


def connect_subscriber(server: Server, session: Session, sub: Subscriber) -> mqtt.Client:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        r = http.post(API + "/auth/mqtt-token", headers={"Authorization": f"Bearer {session.access_token}"})
        r.raise_for_status()
        grant = r.json()
    topic = topics.orders(session.restaurant_id)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{grant['client_id_prefix']}:bench",
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set("bench", grant["token"])

    def on_connect(c, _u, _flags, reason, _props):
        if reason.is_failure:
            sub.sub_error = f"CONNACK {reason}"
            sub.subscribed.set()
            return
        c.subscribe(topic, qos=1)

    def on_subscribe(_c, _u, _mid, reason_codes, _props):
        if any(rc.is_failure for rc in reason_codes):
            sub.sub_error = f"SUBACK {reason_codes}"
        sub.subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = sub.on_message
    assert server.mqtt_port is not None, "a subscriber needs the server started with its broker (`up`)"
    client.connect(HOST, server.mqtt_port, keepalive=30)
    client.loop_start()
    if not sub.subscribed.wait(15):
        client.loop_stop()
        raise RuntimeError("no SUBACK within 15 s")
    if sub.sub_error:
        client.loop_stop()
        raise RuntimeError(f"subscriber refused: {sub.sub_error}")
    return client


def run_latency(args, workdir: Path, split: bool = False) -> dict:
    data_dir = workdir / ("latency-split" if split else "latency")
    with split_orderbus(data_dir) if split else orderbus("up", data_dir, demo=True) as server:
        session = login(server)
        sub = Subscriber()
        client = connect_subscriber(server, session, sub)
        try:
            url = f"{API}/restaurants/{session.restaurant_id}/orders"
            headers = {"Authorization": f"Bearer {session.access_token}"}
            body = order_body(session.item_id)
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=30.0) as http:
                for _ in range(args.warmup):
                    http.post(url, json=body).raise_for_status()
                time.sleep(0.5)

                t_response: dict[int, float] = {}
                post_rtt: list[float] = []
                errors = 0
                late = 0  # POSTs sent more than 1 ms after their scheduled time
                interval = 1.0 / args.rate
                t0 = time.perf_counter()
                for i in range(args.orders):
                    target = t0 + i * interval
                    now = time.perf_counter()
                    if target > now:
                        time.sleep(target - now)
                    elif now - target > 0.001:
                        late += 1
                    t_send = time.perf_counter()
                    try:
                        r = http.post(url, json=body)
                        t_resp = time.perf_counter()
                        r.raise_for_status()
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    t_response[r.json()["id"]] = t_resp
                    post_rtt.append(t_resp - t_send)
                elapsed = time.perf_counter() - t0

            deadline = time.perf_counter() + LOSS_WAIT_S
            while time.perf_counter() < deadline:
                with sub.lock:
                    if all(oid in sub.received for oid in t_response):
                        break
                time.sleep(0.01)
            time.sleep(0.2)  # let late duplicates arrive
        finally:
            client.disconnect()
            client.loop_stop()

    with sub.lock:
        received = {k: list(v) for k, v in sub.received.items()}
    raw = [received[oid][0] - t for oid, t in t_response.items() if oid in received]
    lost = sum(1 for oid in t_response if oid not in received)
    duplicated = sum(len(v) - 1 for oid, v in received.items() if oid in t_response and len(v) > 1)
    clamped = sorted(max(0.0, x) for x in raw)
    rtt = sorted(post_rtt)
    return {
        "orders": args.orders,
        "rate": args.rate,
        "achieved_rate": len(t_response) / elapsed if elapsed else float("nan"),
        "late_posts": late,
        "errors": errors,
        "matched": len(raw),
        "lost": lost,
        "duplicated": duplicated,
        "negative": sum(1 for x in raw if x < 0),
        "raw_min": min(raw) if raw else float("nan"),
        "raw_mean": statistics.fmean(raw) if raw else float("nan"),
        "p50": percentile(clamped, 50),
        "p95": percentile(clamped, 95),
        "p99": percentile(clamped, 99),
        "max": clamped[-1] if clamped else float("nan"),
        "rtt_p50": percentile(rtt, 50),
        "rtt_p99": percentile(rtt, 99),
        "stray_messages": sub.other,
    }


# ---------------------------------------------------------------- B) throughput


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process, from /proc; NaN where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def unpublished(data_dir: Path) -> int:
    """Outbox rows not yet stamped published (read-only, beside the server's WAL)."""
    db = sqlite3.connect(f"file:{data_dir / 'orderbus.db'}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM outbox_event WHERE published_at IS NULL").fetchone()[0]
    finally:
        db.close()


def burst(
    server: Server, session: Session, total: int, concurrency: int, warmup: int, more: tuple[Server, ...] = ()
) -> tuple[float, int, float]:
    """POST `total` orders from `concurrency` threads as fast as possible (after an unmeasured warm-up);
    with `more` servers, thread i posts to server i mod N (all sharing one database).

    Returns (orders/s, errors, server CPU seconds, all servers, while the measured orders ran).
    """
    servers = (server, *more)
    url = f"{API}/restaurants/{session.restaurant_id}/orders"
    headers = {"Authorization": f"Bearer {session.access_token}"}
    body = order_body(session.item_id)
    counter_lock = threading.Lock()
    next_index = [0]
    errors = [0]
    done = [0]
    barrier = threading.Barrier(concurrency + 1)
    finish_times: list[float] = []

    def worker(index: int) -> None:
        target = servers[index % len(servers)]
        with httpx.Client(base_url=target.base_url, headers=headers, timeout=60.0) as http:
            for _ in range(max(1, warmup // concurrency)):
                http.post(url, json=body)
            barrier.wait()
            while True:
                with counter_lock:
                    if next_index[0] >= total:
                        break
                    next_index[0] += 1
                try:
                    r = http.post(url, json=body)
                    ok = r.status_code == 201
                except httpx.HTTPError:
                    ok = False
                with counter_lock:
                    if ok:
                        done[0] += 1
                    else:
                        errors[0] += 1
            finish_times.append(time.perf_counter())

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu0 = sum(process_cpu(s.proc.pid) for s in servers)
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    cpu = sum(process_cpu(s.proc.pid) for s in servers) - cpu0
    elapsed = max(finish_times) - t0
    return done[0] / elapsed, errors[0], cpu


def throughput_on(args, data_dir: Path) -> dict:
    with orderbus("up", data_dir, demo=True) as server:
        session = login(server)
        time.sleep(0.5)
        rate, errors, cpu = burst(server, session, args.throughput_orders, args.concurrency, args.warmup)
        t_end = time.perf_counter()
        cpu_end = process_cpu(server.proc.pid)
        backlog = unpublished(data_dir)
        while unpublished(data_dir) and time.perf_counter() - t_end < 30:
            time.sleep(0.02)
        drained = time.perf_counter() - t_end
        cpu += process_cpu(server.proc.pid) - cpu_end  # the relay's work left after the last response
    return {
        "rate": rate,
        "errors": errors,
        "backlog": backlog,
        "drain_s": drained,
        "cpu_ms": cpu / args.throughput_orders * 1000,
    }


def throughput_off(args, data_dir: Path) -> dict:
    with orderbus("up", data_dir, demo=True) as seeder:
        login(seeder)  # the demo is committed once its admin can log in and see the menu
    with orderbus("api", data_dir) as server:
        session = login(server)
        time.sleep(0.5)
        rate, errors, cpu = burst(server, session, args.throughput_orders, args.concurrency, args.warmup)
    return {"rate": rate, "errors": errors, "cpu_ms": cpu / args.throughput_orders * 1000}


def run_throughput(args, workdir: Path) -> dict:
    on: list[dict] = []
    off: list[dict] = []
    for rnd in range(args.rounds):
        for mode, fn, bucket in (("on", throughput_on, on), ("off", throughput_off, off)):
            result = fn(args, workdir / f"tp-{mode}-{rnd}")
            bucket.append(result)
            extra = f", server CPU {result['cpu_ms']:.2f} ms/order"
            if mode == "on":
                extra += f", outbox backlog at end {result['backlog']}, drained {result['drain_s']:.2f} s later"
            print(
                f"  round {rnd + 1} {mode:>3}: {result['rate']:7.1f} orders/s (errors {result['errors']}{extra})",
                flush=True,
            )
    on_rate = statistics.median(r["rate"] for r in on)
    off_rate = statistics.median(r["rate"] for r in off)
    on_cpu = statistics.median(r["cpu_ms"] for r in on)
    off_cpu = statistics.median(r["cpu_ms"] for r in off)
    return {
        "on_cpu": on_cpu,
        "off_cpu": off_cpu,
        "on": on,
        "off": off,
        "on_rate": on_rate,
        "off_rate": off_rate,
        "ratio": on_rate / off_rate,
        "cost": 1 - on_rate / off_rate,
    }


# ---------------------------------------------------------------- two API processes on PostgreSQL (issue 13)

SCALE_TARGET = 1.6  # two API processes >= 1.6 x one


@contextmanager
def bench_database():
    """A new PostgreSQL database for one run (its SQLAlchemy URL), dropped afterwards."""
    import psycopg
    from sqlalchemy import make_url

    server = os.environ.get("ORDERBUS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"orderbus_bench_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def busy_cores() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def postgres_cpu() -> float:
    """CPU seconds of every process named postgres (the server and its backends) visible here."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_scale_api(args, workdir: Path) -> int:
    results: dict[int, list[dict]] = {1: [], 2: []}
    with bench_database() as url:
        env = {**os.environ, "ORDERBUS_DATABASE_URL": url}
        data_dir = workdir / "scale"
        upgrade = subprocess.run(
            [*orderbus_command(), "db", "upgrade", "--data-dir", str(data_dir)], env=env, capture_output=True, text=True
        )
        if upgrade.returncode != 0:
            print(f"orderbus db upgrade failed: {upgrade.stderr.strip()}")
            return 1
        with orderbus("up", data_dir, demo=True, env=env) as seeder:
            login(seeder)
        for rnd in range(args.rounds):
            for count in (1, 2):
                with ExitStack() as stack:
                    servers = [stack.enter_context(orderbus("api", data_dir, env=env)) for _ in range(count)]
                    session = login(servers[0])
                    time.sleep(0.5)
                    cores0, pg0 = busy_cores(), postgres_cpu()
                    wall0 = time.perf_counter()
                    rate, errors, cpu = burst(
                        servers[0], session, args.throughput_orders, args.concurrency, args.warmup, tuple(servers[1:])
                    )
                    wall = time.perf_counter() - wall0
                    cores1, pg = busy_cores(), postgres_cpu() - pg0
                busy = 100 * (cores1[0] - cores0[0]) / max(cores1[1] - cores0[1], 1)
                result = {"rate": rate, "errors": errors, "api_cores": cpu / wall, "pg_cores": pg / wall, "busy": busy}
                results[count].append(result)
                print(
                    f"  round {rnd + 1}, {count} api process{'es' if count > 1 else ''}: {rate:7.1f} orders/s "
                    f"(errors {errors}; API {result['api_cores']:.2f} cores, PostgreSQL {result['pg_cores']:.2f} "
                    f"cores, machine {busy:.0f} % busy of {os.cpu_count()} cores, load generator the rest)",
                    flush=True,
                )
    one = statistics.median(r["rate"] for r in results[1])
    two = statistics.median(r["rate"] for r in results[2])
    print(f"\nmedian orders/s: one api {one:.1f}, two {two:.1f}; two / one = {two / one:.2f}")
    verdict = "PASS" if two / one >= SCALE_TARGET else "MISS"
    print(f"{verdict} two api processes / one = {two / one:.2f} (target >= {SCALE_TARGET:g})")
    print(f"load average at end: {load_average()}")
    return 0


# ---------------------------------------------------------------- main


def report_split(up: dict, apart: dict) -> int:
    print("\nResults")
    print("  latency = t_received(subscriber) - t_response(POST), ms; percentiles nearest-rank, clamped at 0")
    rows = [
        ("", "up (one process)", "split (three processes)"),
        *((key, ms(up[key]), ms(apart[key])) for key in ("p50", "p95", "p99", "max", "raw_min")),
        ("negative samples", f"{up['negative']} of {up['matched']}", f"{apart['negative']} of {apart['matched']}"),
        ("lost (>5 s)", str(up["lost"]), str(apart["lost"])),
        ("duplicated", str(up["duplicated"]), str(apart["duplicated"])),
        ("POST round trip p50", ms(up["rtt_p50"]), ms(apart["rtt_p50"])),
        ("POST round trip p99", ms(up["rtt_p99"]), ms(apart["rtt_p99"])),
    ]
    width = max(len(row[0]) for row in rows)
    for key, one, three in rows:
        print(f"  {key:<{width}}  {one:>18}  {three:>24}")
    print("\nTargets")
    for name, lat in (("up", up), ("split", apart)):
        ok = lat["p99"] <= P99_TARGET_MS / 1000 and lat["lost"] == 0
        print(
            f"  {name:<5} p99 <= {P99_TARGET_MS:g} ms, nothing lost: {ms(lat['p99'])} ms, lost {lat['lost']}  "
            f"{'PASS' if ok else 'MISS'}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders for the latency run (default 1000)")
    parser.add_argument("--rate", type=float, default=20.0, help="orders/s for the latency run (default 20)")
    parser.add_argument("--throughput-orders", type=int, default=500, help="orders per throughput run (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads for throughput (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs, alternating (default 2, min 2)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured orders before each run (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dirs and logs")
    parser.add_argument(
        "--split", action="store_true", help="latency of `up` and of broker + bridge + api apart; no throughput"
    )
    parser.add_argument(
        "--scale-api", action="store_true", help="orders/s of one and two `orderbus api` on PostgreSQL; nothing else"
    )
    args = parser.parse_args()
    args.rounds = max(2, args.rounds)

    print(f"orderbus core benchmark — {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"code under test: {code_under_test()}")
    print(
        f"machine: {os.cpu_count()} cpus, Python {platform.python_version()}, {platform.platform()}; "
        f"orderbus = {' '.join(orderbus_command())}"
    )
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="orderbus-bench-"))
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        else:
            print(f"work dir: {workdir}")

        print(f"load average at start: {load_average()} (other work on this machine skews the numbers)")
        if args.scale_api:
            print(
                f"\nscale-out: {args.throughput_orders} orders, {args.concurrency} client threads, "
                f"{args.rounds} rounds of one / two api processes on PostgreSQL"
            )
            return run_scale_api(args, workdir)
        print(f"\nA) latency: {args.orders} orders at {args.rate:g}/s (+{args.warmup} warm-up), QoS 1 subscriber")
        lat = run_latency(args, workdir)
        print(
            f"  posted {lat['matched'] + lat['lost']} at {lat['achieved_rate']:.2f}/s, "
            f"{lat['late_posts']} POSTs more than 1 ms behind schedule, {lat['errors']} HTTP errors"
        )
        if args.split:
            print("\nA') the same, with broker, bridge and API as three processes")
            apart = run_latency(args, workdir, split=True)
            print(
                f"  posted {apart['matched'] + apart['lost']} at {apart['achieved_rate']:.2f}/s, "
                f"{apart['late_posts']} POSTs more than 1 ms behind schedule, {apart['errors']} HTTP errors"
            )
            print(f"\nload average at end: {load_average()}")
            return report_split(lat, apart)

        print(
            f"\nB) throughput: {args.throughput_orders} orders, {args.concurrency} client threads, "
            f"{args.rounds} rounds on/off alternating"
        )
        tp = run_throughput(args, workdir)

    print(f"\nload average at end: {load_average()}")
    p99_ok = lat["p99"] <= P99_TARGET_MS / 1000 and lat["lost"] == 0
    cost_ok = tp["cost"] <= RELAY_COST_TARGET
    print("\nResults")
    print("  latency = t_received(subscriber) - t_response(POST), ms; percentiles nearest-rank, clamped at 0")
    rows = [
        ("p50", ms(lat["p50"])),
        ("p95", ms(lat["p95"])),
        ("p99", ms(lat["p99"])),
        ("max", ms(lat["max"])),
        ("raw min (signed)", ms(lat["raw_min"])),
        ("negative samples", f"{lat['negative']} of {lat['matched']}"),
        ("lost (>5 s)", str(lat["lost"])),
        ("duplicated", str(lat["duplicated"])),
        ("POST round trip p50 / p99", f"{ms(lat['rtt_p50'])} / {ms(lat['rtt_p99'])}"),
        ("throughput on (up: broker+API+relay)", f"{tp['on_rate']:.1f} orders/s (median)"),
        ("throughput off (api alone)", f"{tp['off_rate']:.1f} orders/s (median)"),
        ("ratio on/off", f"{tp['ratio']:.3f}"),
        ("relay cost 1 - on/off", f"{tp['cost'] * 100:.1f} %"),
        ("server CPU per order on / off", f"{tp['on_cpu']:.2f} / {tp['off_cpu']:.2f} ms (median)"),
        ("CPU-only relay cost 1 - off/on", f"{(1 - tp['off_cpu'] / tp['on_cpu']) * 100:.1f} %"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("\nTargets")
    print(
        f"  p99 <= {P99_TARGET_MS:g} ms, nothing lost   : {ms(lat['p99'])} ms, lost {lat['lost']}  "
        f"{'PASS' if p99_ok else 'MISS'}"
    )
    print(
        f"  relay cost <= {RELAY_COST_TARGET * 100:g} % of orders/s: {tp['cost'] * 100:.1f} %  "
        f"{'PASS' if cost_ok else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
