"""Benchmark: the hardened embedded broker against bare amqtt, in the same run, with the same load.

    python scripts/bench_broker.py [--messages 20000] [--subscribers 10] [--idle 5000]

1. Deliveries/s: one publisher, N subscribers, 100-byte messages, QoS 0 and QoS 1, driven by
   the mosquitto C clients (`mosquitto_pub -l`, `mosquitto_sub -C`) so the clients are not the
   bottleneck. Each broker runs in its own process pinned to core 0; clients run on core 1.
   Reported: deliveries/s for each broker and the ratio hardened / bare (target >= 0.8).
2. Memory per idle connection: 5,000 authenticated MQTT connections held open; the broker's
   RSS growth divided by the count (target <= 40 KiB).
3. A frozen subscriber: one client stops reading while 1 KiB messages flow at 1,000/s for
   20 s; the broker's RSS growth (bare amqtt grows without bound; ours stops at the backlog limit).

A measurement, not a test: it prints numbers and PASS/MISS against the targets and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import topics
from core.tokens import TokenService
from scripts import raw_mqtt as raw

KEY = b"bench-key-not-a-secret-0123456789abcdef"
TOPIC = topics.orders(7)


# --- the broker processes ---------------------------------------------------------------------


async def serve(kind: str, port: int) -> None:
    """Run one broker until SIGTERM: `hardened` (ours) or `bare` (amqtt with anonymous auth)."""
    from amqtt.broker import Broker

    from broker.policy import Policy
    from broker.server import Listeners, start_broker
    from config import DEFAULT_ACL_POLICY

    if kind == "hardened":
        listeners = Listeners("127.0.0.1", port, _free_port())
        broker = await start_broker(listeners, TokenService(KEY), Policy.load(DEFAULT_ACL_POLICY))
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BrokerProcess:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = _free_port()
        self.process = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, __file__, "serve", kind, str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"{kind} broker did not start")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def credentials(self, client_id: str, role: str) -> list[str]:
        if self.kind == "bare":
            return ["-i", client_id]
        rid = None if role == "service" else 7
        token = TokenService(KEY).issue(sub=client_id, role=role, rid=rid, audience="mqtt", ttl_seconds=3600)
        return ["-i", client_id, "-u", client_id, "-P", token]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- 1. deliveries per second -------------------------------------------------------------------


def deliveries_per_second(broker: BrokerProcess, messages: int, subscribers: int, qos: int) -> float:
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
                str(broker.port),
                "-q",
                str(qos),
                "-t",
                TOPIC,
                "-C",
                str(messages),
                "-W",
                "300",
                *broker.credentials(f"sub-{i}", "admin"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(subscribers)
    ]
    time.sleep(1.0)  # let every subscriber connect and subscribe
    payload = ("x" * 99 + "\n") * messages
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
    failed = [s.stderr.read().decode() for s in subs if s.returncode != 0 and s.stderr is not None]
    if publisher.returncode != 0 or failed:
        raise RuntimeError(f"load failed: pub={publisher.stderr.decode()!r} subs={failed[:2]!r}")
    return messages * subscribers / elapsed


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
        if broker.kind == "hardened":
            password = tokens.issue(sub=client_id, role="staff", rid=7, audience="mqtt", ttl_seconds=3600)
        sock = socket.create_connection(("127.0.0.1", broker.port))
        sock.sendall(raw.connect(client_id, password, keepalive=600))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--frozen-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per broker; the median is kept")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; broker on core 0, clients on core 1")

    rates: dict[tuple[str, int], list[float]] = {}
    for qos in (0, 1):
        for _ in range(args.rounds):
            for kind in ("bare", "hardened"):
                broker = BrokerProcess(kind)
                try:
                    rate = deliveries_per_second(broker, args.messages, args.subscribers, qos)
                finally:
                    broker.stop()
                rates.setdefault((kind, qos), []).append(rate)
                print(f"  qos {qos} {kind:>8}: {rate:8.0f} deliveries/s", flush=True)

    memory: dict[str, tuple[float, int]] = {}
    for kind in ("bare", "hardened"):
        broker = BrokerProcess(kind)
        try:
            memory[kind] = idle_connection_kib(broker, args.idle)
        finally:
            broker.stop()
        print(f"  idle {kind:>8}: {memory[kind][0]:.1f} KiB per connection ({memory[kind][1]} connected)", flush=True)

    growth: dict[str, float] = {}
    for kind in ("bare", "hardened"):
        broker = BrokerProcess(kind)
        try:
            growth[kind] = frozen_subscriber_growth_mib(broker, args.frozen_seconds)
        finally:
            broker.stop()
        print(f"  frozen subscriber {kind:>8}: +{growth[kind]:.1f} MiB in {args.frozen_seconds:.0f} s", flush=True)

    print("\nresults (median of rounds)")
    print(f"{'':24}{'bare amqtt':>14}{'hardened':>14}{'ratio':>9}  target")
    for qos in (0, 1):
        bare = statistics.median(rates[("bare", qos)])
        hardened = statistics.median(rates[("hardened", qos)])
        ratio = hardened / bare
        verdict = "PASS" if ratio >= 0.8 else "MISS"
        print(f"{f'deliveries/s, QoS {qos}':24}{bare:14.0f}{hardened:14.0f}{ratio:9.2f}  >= 0.80 {verdict}")
    per_conn = memory["hardened"][0]
    verdict = "PASS" if per_conn <= 40 else "MISS"
    print(f"{'KiB per idle connection':24}{memory['bare'][0]:14.1f}{per_conn:14.1f}{'':9}  <= 40 KiB {verdict}")
    print(f"{'MiB growth, frozen sub':24}{growth['bare']:14.1f}{growth['hardened']:14.1f}{'':9}  bounded")
    print(f"(connections held: bare {memory['bare'][1]}, hardened {memory['hardened'][1]} of {args.idle})")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        main()
