"""Benchmark: the hardened embedded broker against bare amqtt and Mosquitto, in the same run, with the same load.

    python scripts/bench_broker.py [--messages 20000] [--subscribers 10] [--idle 5000] [--rounds 2]

1. Deliveries/s: one publisher, N subscribers, 100-byte messages, QoS 0 and QoS 1, driven by
   the mosquitto C clients (`mosquitto_pub -l`, `mosquitto_sub -C`) so the clients are not the
   bottleneck. Each broker runs in its own process pinned to core 0; clients run on core 1.
   Brokers: "bare" (amqtt's `Broker`, anonymous), "hardened" (`broker.server.start_broker`, JWT/ACL),
   "mosquitto" (a private `mosquitto -c <tmp conf>` on a free port: `listener <port> 127.0.0.1`,
   `allow_anonymous true`, otherwise defaults). Rounds alternate bare, hardened, mosquitto; the
   median is kept. Reported: deliveries/s, the broker's CPU (user+sys) per delivery in µs, and the
   ratios hardened / bare (targets: >= 3 at QoS 0, >= 2.5 at QoS 1) and hardened / mosquitto
   (informational: "within about 2x", i.e. >= 0.5). Ratios come from the same run, so load from
   other processes on the machine moves both sides. Each run also prints the share of a core the
   broker used (rate x CPU per delivery) and how busy core 0 (broker) and core 1 (clients) were,
   other processes included: a broker well under 100 % of a core is not what sets the rate (the
   clients, flow control or other load on core 0 are), and the CPU per delivery is the better comparison.
2. Memory per idle connection: 5,000 authenticated MQTT connections held open (anonymous for bare
   and Mosquitto); the broker's RSS growth divided by the count (target for hardened <= 30 KiB).
3. A frozen subscriber: one client stops reading while 1 KiB messages flow at 1,000/s for
   20 s; the broker's RSS growth (bare amqtt grows without bound; ours stops at the backlog limit).

4. NATS (issue 13), with `--kinds` naming them: "nats" (one nats-server 2.15.1 node, our auth callout),
   "cluster" (three nodes, every client logging in with our JWT through `orderbus responder`: the
   cluster path; the publisher on node 1, subscriber i on node i mod 3) and "cluster-noauth" (the same
   three nodes with the development password, to show what the callout costs). The nodes get the config
   `orderbus cluster up` renders (broker/nats/conf.py) and all run on core 0, like the other brokers.
   Ratios against Mosquitto (target: cluster / mosquitto >= 1 at QoS 1) are printed from the same run.
   The idle-connection test spreads its connections over the nodes and sums the nodes' RSS.

A measurement, not a test: it prints numbers and PASS/MISS against the targets and exits 0.
To measure one commit while the work tree changes, export it and run the script from the export
(see docs/benchmarks.md); the "code under test" line says which tree the brokers were imported from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import topics
from core.tokens import TokenService
from scripts import raw_mqtt as raw

KEY = b"bench-key-not-a-secret-0123456789abcdef"
TOPIC = topics.orders(7)
KINDS = ("bare", "hardened", "mosquitto")
NATS_KINDS = {"nats": (1, True), "cluster": (3, True), "cluster-noauth": (3, False)}  # nodes, callout
NATS_PIN = ["0"]  # --nats-cores: where the nodes run (taskset CPU list; "" = anywhere)
RATIO_TARGETS = {0: 3.0, 1: 2.5}  # hardened / bare, same run (issue 12)
MOSQUITTO_RATIO = 0.5  # "within about 2x of Mosquitto": informational
IDLE_TARGET_KIB = 30.0


# --- the broker processes ---------------------------------------------------------------------


async def serve(kind: str, port: int) -> None:
    """Run one broker until SIGTERM: `hardened` (ours), `journaled` (ours with the SQLite journal of
    persistent sessions, in a temporary data directory) or `bare` (amqtt with anonymous auth)."""
    from amqtt.broker import Broker

    from broker.policy import Policy
    from broker.server import Listeners, start_broker
    from config import DEFAULT_ACL_POLICY

    journal: Any = None
    data_dir: Path | None = None
    if kind in ("hardened", "journaled"):
        listeners = Listeners("127.0.0.1", port, _free_port())
        extra: dict[str, Any] = {}
        if kind == "journaled":
            from broker.store import SqliteJournal, journal_path  # type: ignore[import-not-found, unused-ignore]

            data_dir = Path(tempfile.mkdtemp(prefix="bench-journal-"))
            journal = SqliteJournal(journal_path(data_dir))
            journal.start()
            extra["journal"] = journal
        broker = await start_broker(listeners, TokenService(KEY), Policy.load(DEFAULT_ACL_POLICY), **extra)
    else:
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await broker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await broker.shutdown()
    if journal is not None:
        print(f"journal commits: {journal.commits}", file=sys.stderr)
        await journal.close()
    if data_dir is not None:
        shutil.rmtree(data_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BrokerProcess:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = _free_port()
        self._conf: Path | None = None
        self.nats: Any = None
        if kind in NATS_KINDS:
            from scripts.bench_nats import NatsBench

            nodes, auth = NATS_KINDS[kind]
            self.nats = NatsBench(nodes, auth=auth, pin=NATS_PIN[0])
            self.nats.start()
            self.port = self.nats.mqtt_port(0)
            return
        if kind == "mosquitto":
            self._conf = Path(tempfile.mkstemp(prefix="bench-mosquitto-", suffix=".conf")[1])
            self._conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
            self.process = subprocess.Popen(
                ["taskset", "-c", "0", "mosquitto", "-c", str(self._conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            _wait_for_port(self.port, self.process)
            return
        self.process = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, __file__, "serve", kind, str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"{kind} broker did not start")

    def port_for(self, index: int) -> int:
        """Client `index`'s port: on a cluster, client i on node i mod N (the publisher, index 0, on node 1)."""
        return self.nats.mqtt_port(index) if self.nats is not None else self.port

    def cpu_seconds(self) -> float:
        """User + system CPU of the broker process (every node of a cluster) so far."""
        if self.nats is not None:
            return float(self.nats.cpu_seconds())
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        if self.nats is not None:
            return int(self.nats.rss_kib())
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def credentials(self, client_id: str, role: str) -> list[str]:
        if self.nats is not None:
            user, password = self.nats.login(client_id, role)
            return ["-i", client_id, "-u", user, "-P", password]
        if self.kind not in ("hardened", "journaled"):
            return ["-i", client_id]
        rid = None if role == "service" else 7
        token = TokenService(KEY).issue(sub=client_id, role=role, rid=rid, audience="mqtt", ttl_seconds=3600)
        return ["-i", client_id, "-u", client_id, "-P", token]

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._conf is not None:
            self._conf.unlink(missing_ok=True)


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {seconds} s")


# --- 1. deliveries per second -------------------------------------------------------------------


def core_times() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat, to tell a broker-bound run from a client-bound one."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields]
            idle = values[3] + values[4]  # idle + iowait
            times[name] = (sum(values) - idle, sum(values))
    return times


def busy_percent(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], core: str) -> float:
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return 100 * busy / max(total, 1)


def deliveries_per_second(
    broker: BrokerProcess, messages: int, subscribers: int, qos: int, persistent: bool = False
) -> tuple[float, float, float, float]:
    """Deliveries/s until every subscriber has every message, µs of broker CPU per delivery, and how busy
    core 0 (the broker) and core 1 (the clients) were, in % (anything else running on the machine included)."""
    subs = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                str(broker.port_for(i + 1)),
                "-q",
                str(qos),
                "-t",
                TOPIC,
                "-C",
                str(messages),
                "-W",
                "300",
                *(["-c"] if persistent else []),  # CleanSession=0: a persistent session (journaled by ours)
                *broker.credentials(f"sub-{i}", "admin"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(subscribers)
    ]
    time.sleep(3.0 if broker.nats is not None else 1.0)  # let every subscriber connect and subscribe
    payload = ("x" * 99 + "\n") * messages
    cpu_before = broker.cpu_seconds()
    cores_before = core_times()
    started = time.perf_counter()
    publisher = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-q",
            str(qos),
            "-t",
            TOPIC,
            "-l",
            *broker.credentials("bench-pub", "service"),
        ],
        input=payload.encode(),
        capture_output=True,
        timeout=600,
    )
    for sub in subs:
        sub.wait(timeout=600)
    elapsed = time.perf_counter() - started
    cpu = broker.cpu_seconds() - cpu_before
    cores_after = core_times()
    failed = [s.stderr.read().decode() for s in subs if s.returncode != 0 and s.stderr is not None]
    if publisher.returncode != 0 or failed:
        raise RuntimeError(f"load failed: pub={publisher.stderr.decode()!r} subs={failed[:2]!r}")
    deliveries = messages * subscribers
    return (
        deliveries / elapsed,
        1e6 * cpu / deliveries,
        busy_percent(cores_before, cores_after, "cpu0"),
        busy_percent(cores_before, cores_after, "cpu1"),
    )


# --- 2. memory per idle connection --------------------------------------------------------------


def idle_connection_kib(broker: BrokerProcess, count: int) -> tuple[float, int]:
    tokens = TokenService(KEY)
    before = broker.rss_kib()
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    pending = 0
    for i in range(count):
        client_id = f"idle-{i}"
        password = None
        username = None
        if broker.kind == "hardened":
            password = tokens.issue(sub=client_id, role="staff", rid=7, audience="mqtt", ttl_seconds=3600)
        if broker.nats is not None:
            username, password = broker.nats.login(client_id, "staff")
        sock = socket.create_connection(("127.0.0.1", broker.port_for(i)))
        sock.sendall(raw.connect(client_id, password, keepalive=600, username=username))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
        sockets.append(sock)
        pending += 1
    accepted = 0
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.data  # the socket itself, registered as the key's data
            data = sock.recv(4)
            selector.unregister(sock)
            pending -= 1
            accepted += data[:1] == b"\x20" and data[3:4] == b"\x00"
    time.sleep(2)
    after = broker.rss_kib()
    for sock in sockets:
        sock.close()
    return (after - before) / max(accepted, 1), accepted


def idle_ramp(broker: BrokerProcess, cap: int, batch: int = 250) -> list[tuple[int, int, float]]:
    """Idle authenticated connections opened `batch` at a time (each batch waits for its CONNACKs, so the
    callout is not asked for thousands at once) until `cap` are held or a batch gets fewer than half
    accepted; returns (held, RSS KiB of the broker, seconds) after each thousand or so."""
    before = broker.rss_kib()
    selector = selectors.DefaultSelector()
    held: list[socket.socket] = []
    steps: list[tuple[int, int, float]] = []
    started = time.monotonic()
    index = 0
    try:
        while len(held) < cap:
            pending: list[socket.socket] = []
            for _ in range(min(batch, cap - len(held))):
                client_id = f"idle-{index}"
                index += 1
                username, password = broker.nats.login(client_id, "staff")
                try:
                    sock = socket.create_connection(("127.0.0.1", broker.port_for(index)))
                except OSError:
                    break
                sock.sendall(raw.connect(client_id, password, keepalive=0, username=username))
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, sock)
                pending.append(sock)
            accepted = 0
            deadline = time.monotonic() + 30
            waiting = len(pending)
            while waiting and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=1):
                    sock = key.data
                    data = b""
                    with contextlib.suppress(OSError):
                        data = sock.recv(4)
                    selector.unregister(sock)
                    waiting -= 1
                    if data[:1] == b"\x20" and data[3:4] == b"\x00":
                        held.append(sock)
                        accepted += 1
                    else:
                        sock.close()
            for sock in pending:
                if sock not in held:
                    with contextlib.suppress(KeyError, ValueError):
                        selector.unregister(sock)
                    sock.close()
            if len(held) // 1000 > (steps[-1][0] // 1000 if steps else 0) or accepted < len(pending) / 2:
                steps.append((len(held), broker.rss_kib() - before, time.monotonic() - started))
                print(f"    held {len(held)}, nodes' RSS +{steps[-1][1] / 1024:.0f} MiB", flush=True)
            if not pending or accepted < len(pending) / 2:
                break
        time.sleep(2)
        steps.append((len(held), broker.rss_kib() - before, time.monotonic() - started))
    finally:
        for sock in held:
            sock.close()
    return steps


# --- 3. a frozen subscriber -------------------------------------------------------------------


def frozen_subscriber_growth_mib(broker: BrokerProcess, seconds: float = 20.0, rate: int = 1000) -> float:
    """RSS growth while one subscriber stops reading and 1 KiB messages flow at `rate`/s."""
    password = None
    if broker.kind == "hardened":
        password = TokenService(KEY).issue(sub="frozen", role="staff", rid=7, audience="mqtt", ttl_seconds=3600)
    frozen = socket.create_connection(("127.0.0.1", broker.port))
    frozen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frozen.sendall(raw.connect("frozen", password, keepalive=600))
    raw.read_packet(frozen)
    frozen.sendall(raw.subscribe(TOPIC, qos=0))
    raw.read_packet(frozen)  # SUBACK; it reads nothing from here on
    before = broker.rss_kib()
    publisher = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-q",
            "0",
            "-t",
            TOPIC,
            "-l",
            *broker.credentials("bench-pub", "service"),
        ],
        stdin=subprocess.PIPE,
    )
    line = ("x" * 1023 + "\n").encode()
    started = time.monotonic()
    sent = 0
    assert publisher.stdin is not None
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        if due > sent:
            publisher.stdin.write(line * (due - sent))
            publisher.stdin.flush()
            sent = due
        time.sleep(0.01)
    after = broker.rss_kib()
    publisher.stdin.close()
    publisher.wait(timeout=30)
    frozen.close()
    return (after - before) / 1024


# --- main ---------------------------------------------------------------------------------------


def code_under_test() -> str:
    """The tree the brokers import `broker` from (the serve processes run this file with the same path)."""
    import broker

    root = Path(broker.__file__).resolve().parents[1]
    state = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return f"{root} (git {state.stdout.strip()})" if state.returncode == 0 else f"{root} (not a git checkout)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--idle", type=int, default=5000, help="0 skips the idle-connection test")
    parser.add_argument("--frozen-seconds", type=float, default=20.0, help="0 skips the frozen-subscriber test")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per broker; the median is kept")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="brokers for the delivery test, in round order: bare, hardened, mosquitto, journaled (ours with"
        " broker.store's SQLite journal; with --persistent its cost shows, only persistent sessions are journaled)",
    )
    parser.add_argument(
        "--persistent", action="store_true", help="subscribers connect with CleanSession=0 (mosquitto_sub -c)"
    )
    parser.add_argument("--nats-cores", default="0", help='CPU list for the NATS nodes ("" = not pinned)')
    parser.add_argument(
        "--idle-ramp", type=int, default=0, help="NATS kinds: open idle connections 250 at a time up to this cap"
    )
    args = parser.parse_args()
    NATS_PIN[0] = args.nats_cores
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(kinds) - {*KINDS, *NATS_KINDS, "journaled"}
    if unknown:
        parser.error(f"unknown --kinds {sorted(unknown)}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from importlib.metadata import version

    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; broker on core 0, clients on core 1")
    print(f"versions: amqtt {version('amqtt')}, {' '.join(mosquitto) or 'mosquitto ?'}")
    print(f"code under test: {code_under_test()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sessions = "persistent (CleanSession=0)" if args.persistent else "clean"
    print(
        f"load: {args.messages} messages x {args.subscribers} subscribers, 100 B, {sessions} sessions,"
        f" {args.rounds} rounds of {', '.join(kinds)}",
        flush=True,
    )

    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for qos in (0, 1):
        for _ in range(args.rounds):
            for kind in kinds:
                broker = BrokerProcess(kind)
                try:
                    rate, cpu_us, core0, core1 = deliveries_per_second(
                        broker, args.messages, args.subscribers, qos, args.persistent
                    )
                finally:
                    broker.stop()
                rates.setdefault((kind, qos), []).append(rate)
                cpus.setdefault((kind, qos), []).append(cpu_us)
                print(
                    f"  qos {qos} {kind:>9}: {rate:8.0f} deliveries/s, {cpu_us:6.1f} us broker CPU per delivery"
                    f" (broker {rate * cpu_us / 1e4:3.0f} % of a core;"
                    f" busy: core 0 {core0:3.0f} %, core 1 {core1:3.0f} %)",
                    flush=True,
                )

    memory: dict[str, tuple[float, int]] = {}
    if args.idle_ramp > 0:
        for kind in (k for k in NATS_KINDS if k in kinds):
            broker = BrokerProcess(kind)
            try:
                steps = idle_ramp(broker, args.idle_ramp)
            finally:
                broker.stop()
            count, grown_kib, seconds = steps[-1]
            print(
                f"  idle ramp {kind}: {count} held (cap {args.idle_ramp}) in {seconds:.0f} s,"
                f" {grown_kib / max(count, 1):.1f} KiB per connection (all nodes' RSS)",
                flush=True,
            )
    if args.idle > 0:
        for kind in (k for k in (*KINDS, *NATS_KINDS) if k in kinds):
            broker = BrokerProcess(kind)
            try:
                memory[kind] = idle_connection_kib(broker, args.idle)
            finally:
                broker.stop()
            print(
                f"  idle {kind:>9}: {memory[kind][0]:.1f} KiB per connection ({memory[kind][1]} connected)",
                flush=True,
            )

    growth: dict[str, float] = {}
    if args.frozen_seconds > 0:
        for kind in (k for k in ("bare", "hardened") if k in kinds):
            broker = BrokerProcess(kind)
            try:
                growth[kind] = frozen_subscriber_growth_mib(broker, args.frozen_seconds)
            finally:
                broker.stop()
            print(f"  frozen subscriber {kind:>8}: +{growth[kind]:.1f} MiB in {args.frozen_seconds:.0f} s", flush=True)

    def median(table: dict[tuple[str, int], list[float]], kind: str, qos: int) -> float:
        return statistics.median(table[(kind, qos)]) if (kind, qos) in table else float("nan")

    def cell(value: float, digits: int) -> str:
        return f"{'-':>15}" if value != value else f"{value:15.{digits}f}"  # NaN: not run

    print("\nresults (median of rounds; ratios of the medians)")
    print(f"{'':26}" + "".join(f"{k:>15}" for k in kinds) + f"{'h/bare':>9}{'h/mosq':>9}")
    for qos in (0, 1):
        rate_of = {k: median(rates, k, qos) for k in (*KINDS, *NATS_KINDS, "journaled")}
        us_of = {k: median(cpus, k, qos) for k in (*KINDS, *NATS_KINDS, "journaled")}
        print(
            f"{f'deliveries/s, QoS {qos}':26}"
            + "".join(cell(rate_of[k], 0) for k in kinds)
            + f"{rate_of['hardened'] / rate_of['bare']:9.2f}{rate_of['hardened'] / rate_of['mosquitto']:9.2f}"
        )
        print(
            f"{f'us CPU/delivery, QoS {qos}':26}"
            + "".join(cell(us_of[k], 1) for k in kinds)
            + f"{us_of['bare'] / us_of['hardened']:9.2f}{us_of['mosquitto'] / us_of['hardened']:9.2f}  (bare/h, mosq/h)"
        )
        for kind in (k for k in NATS_KINDS if k in kinds):
            print(
                f"  {kind}, QoS {qos}: {rate_of[kind] / rate_of['mosquitto']:.2f} x mosquitto's deliveries/s,"
                f" {rate_of[kind] / rate_of['hardened']:.2f} x hardened's;"
                f" CPU per delivery {us_of[kind] / us_of['mosquitto']:.2f} x mosquitto's (all nodes summed)"
            )
        if "journaled" in kinds and "hardened" in kinds:
            print(
                f"  journaled, QoS {qos}: {rate_of['journaled'] / rate_of['hardened']:.2f} x hardened's deliveries/s,"
                f" {us_of['journaled'] - us_of['hardened']:+.1f} us CPU per delivery"
            )
    if memory:
        print(f"{'KiB per idle connection':26}" + "".join(cell(memory[k][0], 1) for k in memory))
        print(f"{'(brokers)':26}" + "".join(f"{k:>15}" for k in memory))
        held = ", ".join(f"{k} {memory[k][1]}" for k in memory)
        print(f"(connections held of {args.idle}: {held})")
    if growth:
        print(f"{'MiB growth, frozen sub':26}" + "".join(cell(growth[k], 1) for k in growth))

    print("\ntargets")
    for qos in (0, 1):
        bare, hardened, mosq = (median(rates, k, qos) for k in KINDS)
        target = RATIO_TARGETS[qos]
        if bare == bare and hardened == hardened:
            verdict = "PASS" if hardened / bare >= target else "MISS"
            print(f"{verdict} QoS {qos}: hardened / bare amqtt = {hardened / bare:.2f} (target >= {target:g})")
        if mosq == mosq and hardened == hardened:
            verdict = "PASS" if hardened / mosq >= MOSQUITTO_RATIO else "MISS"
            print(
                f"{verdict} QoS {qos}: hardened / mosquitto = {hardened / mosq:.2f} "
                f"(informational: within about 2x, >= {MOSQUITTO_RATIO:g})"
            )
    for qos in (0, 1):
        cluster, mosq = median(rates, "cluster", qos), median(rates, "mosquitto", qos)
        if cluster == cluster and mosq == mosq:
            verdict = "PASS" if cluster >= mosq else "MISS"
            meaning = "target >= 1 at QoS 1" if qos == 1 else "informational"
            print(f"{verdict} QoS {qos}: cluster path / mosquitto = {cluster / mosq:.2f} ({meaning})")
    if "hardened" in memory:
        per_conn, held_count = memory["hardened"]
        verdict = "PASS" if per_conn <= IDLE_TARGET_KIB and held_count == args.idle else "MISS"
        print(
            f"{verdict} idle connection: hardened {per_conn:.1f} KiB at {held_count} connections "
            f"(target <= {IDLE_TARGET_KIB:g} KiB at {args.idle})"
        )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        main()
