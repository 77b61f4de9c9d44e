"""The chaos run: faults injected into a real orderbus under steady orders, and an account of every order.

Each scenario starts its own orderbus (`orderbus up`, or `orderbus broker` + `api` + `bridge` run
apart) on free ports in a temporary directory, with two persistent QoS 1 subscribers that behave
like dashboards (seq order, catch-up by `/events?after=` on reconnect or gap; scripts/chaos_clients.py),
a printer agent and a headless KDS tablet. Orders arrive at a steady rate over HTTP; the fault is
injected; once the faulty part is back the orders go on for the recovery window, then every
accepted order (201 with its id) is looked up in `/events` and in what each subscriber applied.
Each order carries an Idempotency-Key, and an order whose answer was lost is sent again with it
(for up to 30 s), as a careful till does.

    PYTHONPATH=$PWD python scripts/chaos.py            # every scenario (≤ 10 min)
    PYTHONPATH=$PWD python scripts/chaos.py --short    # one kill -9 of the process, broker, bridge (≤ 90 s)
    PYTHONPATH=$PWD python scripts/chaos.py --only split-kill-broker --json out.json

Columns: accepted (201s), in /events (their new_order events; `!` if the restaurant's seq has a gap
or repeats an id), mqtt (orders every subscriber got over MQTT), by seq (orders some subscriber got
only by catch-up), lost (orders some subscriber never got), dup id / dup new (QoS 1 redeliveries of
the same event id; seqs filled by another id, a defect), late (MQTT copies below a seq already
received: a subscriber without gap checks applies them out of order), recover (from the faulty part
back to every subscriber having applied, gap-free, the first order sent after it; `never` if one
never did, `n/a` if no order sent after it was accepted; `!` above 15 s), broker VmRSS
before / peak / after in MiB, extra (orders saved whose client got no 201, retries included), printer and KDS
(informational: tickets printed of the station's tickets, accepted orders on the board).
Exit status 1 if any accepted order is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import topics  # noqa: E402
from core.tokens import TokenService, load_or_create_key  # noqa: E402
from scripts.ports import free_port  # noqa: E402

PYTHON = sys.executable
RECOVER_TARGET = 15.0
RETRY_SECONDS = 30.0  # how long a till keeps re-sending an order whose answer it did not get
_children: list[subprocess.Popen[bytes]] = []


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=env or _env())
    _children.append(process)
    return process


def kill_all() -> None:
    """Every process this run started, whatever state it is in (a frozen one too)."""
    for process in _children:
        if process.poll() is None:
            process.kill()
    for process in _children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    _children.clear()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


class Part:
    """One orderbus process (`up`, `broker`, `api` or `bridge`) that can be killed and started again."""

    def __init__(self, command: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.command, self.args, self.env = command, args, env
        self.log = workdir / f"{command}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> float:
        """Start and wait for its banner; returns the moment it is back."""
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        self._mark = self.log.stat().st_size if self.log.exists() else 0
        self.process = spawn([PYTHON, "-m", "cli.main", self.command, *self.args], self.log, self.env)

    def wait_ready(self, timeout: float = 90.0) -> float:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"orderbus {self.command} exited: {self.log.read_text()[-2000:]}")
            with self.log.open("rb") as text:
                text.seek(self._mark)
                return b"Ctrl-C to stop" in text.read()

        wait_until(ready, timeout, f"orderbus {self.command} start")
        return time.time()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)


class Topology:
    """`orderbus up` in one process, or broker, API and bridge run apart, on one data directory."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.mode, self.workdir = mode, workdir
        self.data_dir = workdir / "data"
        self.http_port, self.mqtt_port, ws_port = free_port(), free_port(), free_port()
        common = ["--data-dir", str(self.data_dir)]
        mqtt = ["--mqtt-port", str(self.mqtt_port)]
        if mode == "up":
            web = ["--http-port", str(self.http_port), "--ws-port", str(ws_port), "--demo"]
            self.parts = {"up": Part("up", [*common, *mqtt, *web], workdir)}
        else:
            demo = {**_env(), "ORDERBUS_DEMO": "1"}
            self.parts = {
                "broker": Part("broker", [*common, *mqtt, "--ws-port", str(ws_port)], workdir),
                "api": Part("api", [*common, "--http-port", str(self.http_port)], workdir, demo),
                "bridge": Part("bridge", [*common, *mqtt], workdir),
            }

    def start(self) -> None:
        """The key and the schema first (parts run apart refuse a database that is not upgraded, and two
        parts making the key at once could race), then every part at once."""
        from config.settings import Settings
        from core.db import make_engine, upgrade

        load_or_create_key(self.data_dir)  # also makes the directory
        engine = make_engine(Settings(data_dir=self.data_dir).db_url)
        upgrade(engine)  # what `orderbus db upgrade` does
        engine.dispose()
        for part in self.parts.values():
            part.spawn()
        for part in self.parts.values():
            part.wait_ready()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def broker(self) -> Part:
        return self.parts["up" if self.mode == "up" else "broker"]

    def restart(self, name: str) -> float:
        return self.parts[name].start()


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Memory(threading.Thread):
    """Samples the broker's VmRSS (the whole process under `orderbus up`) every quarter second."""

    def __init__(self, topology: Topology) -> None:
        super().__init__(daemon=True)
        self.topology = topology
        self.peak = 0.0
        self.stopped = threading.Event()

    def now(self) -> float:
        return rss_mib(self.topology.broker.pid) or 0.0

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.peak = max(self.peak, self.now())


@dataclass
class Sent:
    started: float
    order_id: int | None = None
    status: int | None = None  # None: no answer (connection error or timeout)


class Load:
    """Orders at a steady rate from a few threads; every request and its answer is kept."""

    def __init__(self, api: str, rid: int, token: str, body: dict[str, Any], rate: float, workers: int = 6) -> None:
        self.api, self.rid, self.body, self.rate = api, rid, body, rate
        self.headers = {"authorization": f"Bearer {token}"}
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._next = time.monotonic()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=RETRY_SECONDS + 15)

    def _slot(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next + 1.0 / self.rate, now - 1.0)  # no burst after a stall
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)

    def _work(self) -> None:
        with httpx.Client(base_url=self.api, timeout=10.0, headers=self.headers) as http:
            while not self._stop.is_set():
                self._slot()
                sent = Sent(time.time())
                with self._lock:
                    self.sent.append(sent)
                self._send(http, sent)

    def _send(self, http: httpx.Client, sent: Sent) -> None:
        """As a careful till does: an order whose answer was lost (no connection, a timeout, a 5xx) is
        sent again with the same Idempotency-Key, so the bus answers with the first answer instead of
        taking it twice; for up to RETRY_SECONDS."""
        key = str(uuid.uuid4())
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                answer: httpx.Response | None = http.post(
                    f"/restaurants/{self.rid}/orders", json=self.body, headers={"idempotency-key": key}
                )
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code < 500:
                sent.status = answer.status_code
                if answer.status_code == 201:
                    sent.order_id = answer.json()["id"]
                return
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)

    def accepted(self) -> list[Sent]:
        with self._lock:
            return [sent for sent in self.sent if sent.order_id is not None]


@dataclass
class Row:
    scenario: str
    accepted: int = 0
    in_events: int = 0
    events_ok: bool = True
    mqtt: int = 0
    by_seq: int = 0
    lost: int = 0
    dup_same: int = 0
    dup_new: int = 0
    late: int = 0
    recover: float | None = None
    mem: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extra: int = 0
    printer: str = ""
    kds: str = ""
    notes: list[str] = field(default_factory=list)
    lost_ids: list[int] = field(default_factory=list)


class Scenario:
    """One fault under load: `fault(run)` injects it and returns the moment the faulty part is back."""

    def __init__(
        self,
        name: str,
        mode: str,
        fault: Callable[[Run], float],
        *,
        mqtt_ttl: int = 600,
        note: str = "",
        recover_window: float = 10.0,
    ) -> None:
        self.name, self.mode, self.fault = name, mode, fault
        self.mqtt_ttl, self.note, self.recover_window = mqtt_ttl, note, recover_window


class Run:
    """One scenario's processes and accounts."""

    def __init__(self, scenario: Scenario, workdir: Path, rate: float) -> None:
        self.scenario, self.workdir, self.rate = scenario, workdir, rate
        self.topology = Topology(scenario.mode, workdir)
        self.rid = 1
        self.subscribers: dict[str, subprocess.Popen[bytes]] = {}
        self.notes: list[str] = [scenario.note] if scenario.note else []

    def client_args(self, role: str, name: str, out: Path) -> list[str]:
        return [
            PYTHON,
            str(ROOT / "scripts" / "chaos_clients.py"),
            role,
            "--rid",
            str(self.rid),
            "--port",
            str(self.topology.mqtt_port),
            "--api",
            self.topology.api,
            "--data-dir",
            str(self.topology.data_dir),
            "--name",
            name,
            "--out",
            str(out),
            "--mqtt-ttl",
            str(self.scenario.mqtt_ttl),
        ]

    def start(self) -> None:
        self.topology.start()
        self.tokens = TokenService(load_or_create_key(self.topology.data_dir))
        admin = self.tokens.issue(sub="chaos", role="admin", rid=self.rid, audience="api", ttl_seconds=3600)
        self.http = httpx.Client(base_url=self.topology.api, timeout=30.0, headers={"authorization": f"Bearer {admin}"})
        items = self.http.get(f"/restaurants/{self.rid}/menu-items").raise_for_status().json()["data"]
        untracked = {item["name"]: item["id"] for item in items if not item["enable_stock_tracking"]}
        body = {
            "items": [{"menu_item_id": untracked[name], "quantity": 1} for name in ("Fries", "Espresso")],
            "table_name": "T1",
        }
        for name in ("sub-a", "sub-b"):
            out = self.workdir / f"{name}.jsonl"
            self.subscribers[name] = spawn(self.client_args("subscriber", name, out), self.workdir / f"{name}.log")
        spawn(self.client_args("kds", "kds-kitchen-1", self.workdir / "kds.json"), self.workdir / "kds.log")
        printer = self.tokens.issue(
            sub="printer-grill-1",
            role="printer",
            rid=self.rid,
            audience="mqtt",
            ttl_seconds=3600,
            extra={"station": "grill"},
        )
        spawn(
            [
                PYTHON,
                "-m",
                "cli.main",
                "device",
                "printer",
                "--token",
                printer,
                "--printer",
                f"file:{self.workdir / 'grill.escpos'}",
                "--state-dir",
                str(self.workdir / "printer"),
                "--mqtt-port",
                str(self.topology.mqtt_port),
                "--keepalive",
                "10",
            ],
            self.workdir / "printer.log",
        )
        for name in self.subscribers:
            wait_until(functools.partial(self.records, name, "connect"), 60, f"{name} connected")
        self.load = Load(self.topology.api, self.rid, admin, body, self.rate)

    def records(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.workdir / f"{name}.jsonl"
        if not path.exists():
            return []
        lines = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if kind is None or record["kind"] == kind:
                lines.append(record)
        return lines

    def events(self) -> list[dict[str, Any]]:
        """Every committed event of the restaurant, from the catch-up endpoint."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.http.get(f"/restaurants/{self.rid}/events", params={"after": len(found), "limit": 1000})
            page.raise_for_status()
            batch = page.json()
            found += batch
            if len(batch) < 1000:
                return found

    def applied_seq(self, name: str) -> int:
        applies = self.records(name, "apply")
        return applies[-1]["seq"] if applies else 0

    def settle(self, budget: float) -> None:
        """Wait until every subscriber has applied every committed event, or the budget is spent."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            try:
                last = self.events()[-1]["seq"]
            except (httpx.HTTPError, IndexError):
                time.sleep(0.5)
                continue
            if all(self.applied_seq(name) >= last for name in self.subscribers):
                return
            time.sleep(0.5)
        self.notes.append(f"subscribers not caught up within the {budget:.0f}s settle budget")

    def execute(self) -> Row:
        self.start()
        memory = Memory(self.topology)
        self.load.start()
        time.sleep(3.0)
        before = memory.now()
        memory.start()
        back = self.scenario.fault(self)
        time.sleep(self.scenario.recover_window)
        self.load.stop()
        self.settle(30.0)
        memory.stopped.set()
        after = memory.now()
        return self.account(back, (before, max(memory.peak, before, after), after))

    def account(self, back: float, mem: tuple[float, float, float]) -> Row:
        row = Row(self.scenario.name, mem=mem, notes=self.notes)
        accepted = self.load.accepted()
        row.accepted = len(accepted)
        events = self.events()
        seqs = [event["seq"] for event in events]
        ids = [event["id"] for event in events]
        row.events_ok = seqs == list(range(1, len(seqs) + 1)) and len(set(ids)) == len(ids)
        order_seq = {event["data"]["order"]["id"]: event["seq"] for event in events if event["type"] == "new_order"}
        accepted_ids = {sent.order_id for sent in accepted if sent.order_id is not None}
        row.in_events = sum(1 for order_id in accepted_ids if order_id in order_seq)
        row.extra = len(set(order_seq) - accepted_ids)  # the demo seeds no orders: all came from the load
        got: dict[str, tuple[set[int], set[int]]] = {}
        for name in self.subscribers:
            mqtt_orders = {r["order"] for r in self.records(name, "mqtt") if r.get("order") is not None}
            applied_orders = {r["order"] for r in self.records(name, "apply") if r.get("order") is not None}
            got[name] = (mqtt_orders, applied_orders)
            row.dup_same += len(self.records(name, "dup_same"))
            row.dup_new += len(self.records(name, "dup_new"))
            row.late += len(self.records(name, "late"))
        for order_id in sorted(accepted_ids):
            if all(order_id in mqtt_orders for mqtt_orders, _ in got.values()):
                row.mqtt += 1
            elif all(order_id in mqtt_orders | applied for mqtt_orders, applied in got.values()):
                row.by_seq += 1
            else:
                row.lost += 1
                row.lost_ids.append(order_id)
        row.recover = self.recovery(back, accepted, order_seq)
        row.printer = self.printed(events)
        row.kds = self.shown(accepted_ids)
        return row

    def recovery(self, back: float, accepted: list[Sent], order_seq: dict[int, int]) -> float | None:
        """From `back` to every subscriber having applied, in order, the first order sent after it."""
        after = sorted(
            (sent.started, order_seq[sent.order_id])
            for sent in accepted
            if sent.started >= back and sent.order_id is not None and sent.order_id in order_seq
        )
        if not after:
            self.notes.append("no order sent after the part was back was accepted: recovery not measured")
            return None
        target = after[0][1]
        done = []
        for name in self.subscribers:
            reached = [r["t"] for r in self.records(name, "apply") if r["seq"] >= target]
            if not reached:
                return float("inf")
            done.append(reached[0])
        return max(done) - back

    def printed(self, events: list[dict[str, Any]]) -> str:
        expected = {
            event["data"]["ticket"]["id"]
            for event in events
            if event["type"] == "kitchen_ticket" and event["data"]["ticket"]["station"] == "grill"
        }
        journal = self.workdir / "printer" / "printer-grill-1.journal.sqlite3"
        try:
            with sqlite3.connect(journal) as db:
                done = {row[0] for row in db.execute("select id from ticket where state = 'printed'")}
        except sqlite3.Error:
            done = set()
        return f"{len(done & expected)}/{len(expected)}"

    def shown(self, accepted_ids: set[int]) -> str:
        try:
            board = set(json.loads((self.workdir / "kds.json").read_text())["orders"])
        except (OSError, ValueError):
            board = set()
        return f"{len(board & accepted_ids)}/{len(accepted_ids)}"


# --- faults -----------------------------------------------------------------------------------------


def kill9(part: str, down: float = 2.0) -> Callable[[Run], float]:
    def fault(run: Run) -> float:
        run.topology.parts[part].kill()
        time.sleep(down)
        return run.topology.restart(part)

    return fault


def freeze_subscriber(seconds: float, rate: float, flood_per_second: int = 600) -> Callable[[Run], float]:
    """SIGSTOP one subscriber for `seconds` while orders arrive at `rate` per second and a service
    client floods the restaurant with `flood_per_second` filler messages (JSON that is no event, so
    subscribers ignore it); SIGCONT is 'back'. The broker must keep its memory bounded meanwhile."""

    def fault(run: Run) -> float:
        frozen = run.subscribers["sub-b"]
        run.load.rate = rate
        started = time.time()
        frozen.send_signal(signal.SIGSTOP)
        sent = flood(run, flood_per_second, seconds)
        frozen.send_signal(signal.SIGCONT)
        back = time.time()
        run.load.rate = run.rate
        orders = [r for r in run.records("sub-a", "mqtt") if started <= r["t"] <= back and r["order"] is not None]
        mqtt_messages = len(orders) * 4  # per order: new_order, its open-order state, a grill and a bar ticket
        run.notes.append(
            f"sub-b frozen {seconds:.0f}s; orders {rate:.0f}/s offered, about {mqtt_messages / seconds:.0f} "
            f"MQTT event messages/s and {sent / seconds:.0f} filler messages/s to a restaurant/# subscriber"
        )
        return back

    return fault


def flood(run: Run, per_second: int, seconds: float) -> int:
    """Filler messages at `per_second` for `seconds`, as the bus's service role (QoS 0, 200 bytes);
    returns how many were sent."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    token = run.tokens.issue(sub="chaos-flood", role="service", rid=None, audience="mqtt", ttl_seconds=3600)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-flood")
    client.username_pw_set("chaos-flood", token)
    client.connect("127.0.0.1", run.topology.mqtt_port)
    client.loop_start()
    topic, payload = topics.channel(run.rid, topics.NOTIFICATIONS), json.dumps({"filler": True, "pad": "x" * 170})
    sent, start = 0, time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            while sent < int(elapsed * per_second):
                client.publish(topic, payload, qos=0)
                sent += 1
            time.sleep(0.005)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def poison(run: Run) -> float:
    """An event larger than the broker's packet limit, written to the outbox the way the app writes
    events (a unit of work on its database): the API refuses such an order since its input limits."""
    from config.settings import Settings
    from core.db import make_engine
    from core.events import NOTIFICATION, Event
    from core.unit_of_work import UnitOfWork

    engine = make_engine(Settings(data_dir=run.topology.data_dir).db_url)
    try:
        with UnitOfWork(engine) as uow:
            big = {"notification": {"id": 0, "kind": "chaos", "message": "é" * 300_000}}
            uow.emit(run.rid, Event(NOTIFICATION, big))
            uow.commit()
    finally:
        engine.dispose()
    return time.time()


def sigterm_pending(run: Run) -> float:
    """The broker dies, events pile up in the outbox, the bridge gets SIGTERM (it cannot drain), then
    broker and bridge come back: what was pending must go out."""
    parts = run.topology.parts
    parts["broker"].kill()
    time.sleep(3.0)
    parts["bridge"].signal(signal.SIGTERM)
    assert parts["bridge"].process is not None
    code = parts["bridge"].process.wait(timeout=20)
    run.notes.append(f"bridge exited {code} on SIGTERM with the broker down")
    run.topology.restart("broker")
    return run.topology.restart("bridge")


def sigterm_up(run: Run) -> float:
    part = run.topology.parts["up"]
    part.signal(signal.SIGTERM)
    assert part.process is not None
    code = part.process.wait(timeout=30)
    run.notes.append(f"orderbus up exited {code} on SIGTERM under load")
    return run.topology.restart("up")


def token_expiry(run: Run) -> float:
    """Subscriber tokens live `mqtt_ttl` seconds; the broker ends their connections at exp, they
    reconnect with a fresh token and catch up. 'Back' is the expiry."""
    expires = max(run.records(name, "signed")[0]["exp"] for name in run.subscribers)
    time.sleep(max(0.0, expires - time.time()) + 2.0)
    reconnects = {name: len(run.records(name, "connect")) for name in run.subscribers}
    run.notes.append(f"connections per subscriber after expiry: {reconnects}")
    return expires


SHORT = [
    Scenario("up-kill-process", "up", kill9("up")),
    Scenario("split-kill-broker", "split", kill9("broker")),
    Scenario("split-kill-bridge", "split", kill9("bridge")),
]
FULL = [
    *SHORT,
    Scenario("split-kill-api", "split", kill9("api")),
    Scenario("up-sigterm-under-load", "up", sigterm_up),
    Scenario("split-sigterm-bridge-pending", "split", sigterm_pending),
    Scenario("up-token-expiry", "up", token_expiry, mqtt_ttl=20),
    Scenario(
        "up-poison-event",
        "up",
        poison,
        note="poison written to the outbox directly (core's unit of work): the relay must skip it",
        recover_window=15.0,
    ),
    Scenario("up-freeze-subscriber", "up", freeze_subscriber(60.0, 150.0)),
]


def run_scenario(scenario: Scenario, rate: float, keep: bool = False) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{scenario.name}-"))
    run = Run(scenario, workdir, rate)
    try:
        return run.execute()
    except Exception as exc:  # a scenario that cannot finish is a failed row, not a crash of the run
        row = Row(scenario.name, notes=[*run.notes, f"aborted: {type(exc).__name__}: {exc}"])
        row.lost = -1
        return row
    finally:
        kill_all()
        if keep:
            print(f"{scenario.name}: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def fmt_recover(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds == float("inf"):
        return "never"
    return f"{seconds:.1f}s" + ("" if seconds <= RECOVER_TARGET else " !")


HEADER = (
    "scenario",
    "accepted",
    "in /events",
    "mqtt",
    "by seq",
    "lost",
    "dup id",
    "dup new",
    "late",
    "recover",
    "broker MiB b/p/a",
    "extra",
    "printer",
    "kds",
)


def table(rows: list[Row]) -> str:
    lines = [
        [
            row.scenario,
            str(row.accepted),
            f"{row.in_events}{'' if row.events_ok else ' !'}",
            str(row.mqtt),
            str(row.by_seq),
            "aborted" if row.lost < 0 else str(row.lost),
            str(row.dup_same),
            str(row.dup_new),
            str(row.late),
            fmt_recover(row.recover),
            "/".join(f"{value:.0f}" for value in row.mem),
            str(row.extra),
            row.printer,
            row.kds,
        ]
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [list(HEADER), *lines]) for i in range(len(HEADER))]
    render = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)) + " |" for cells in lines]
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    head = "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(HEADER)) + " |"
    notes = [f"- {row.scenario}: {note}" for row in rows for note in row.notes]
    notes += [f"- {row.scenario}: lost order ids {row.lost_ids[:20]}" for row in rows if row.lost_ids]
    return "\n".join([head, rule, *render, *(["", "Notes:", *notes] if notes else [])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="one kill -9 of the process, the broker, the bridge")
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second [20]")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's directory (logs, records)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    chosen = SHORT if args.short else FULL
    if args.only:
        chosen = [scenario for scenario in FULL if scenario.name in args.only]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    load_at_start = os.getloadavg()
    rows: list[Row] = []
    interrupted = False
    try:
        for scenario in chosen:
            row = run_scenario(scenario, args.rate, args.keep)
            rows.append(row)
            print(f"{time.monotonic() - started:4.0f}s  {table([row]).splitlines()[2]}", file=sys.stderr, flush=True)
    except (KeyboardInterrupt, SystemExit):
        interrupted = True  # Ctrl-C or SIGTERM: the scenarios done so far are still reported
    finally:
        kill_all()
    print(table(rows))
    print(f"\n{len(rows)} of {len(chosen)} scenario(s) in {time.monotonic() - started:.0f}s", end="; ")
    print(
        "load average at start {:.1f} {:.1f} {:.1f}, at end {:.1f} {:.1f} {:.1f}".format(
            *load_at_start, *os.getloadavg()
        )
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    return 1 if interrupted or any(row.lost != 0 for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
