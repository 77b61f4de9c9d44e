"""The NATS side of the benchmarks (issue 13): a cluster of real nats-server processes (broker/nats/cluster.py,
the same rendered config as `orderbus cluster up`) with our auth-callout responder in front, for
bench_broker.py, bench_fanout.py and bench_fleet.py to measure side by side with the embedded broker.

    with NatsBench(nodes=3, auth=True) as nats: ...

`auth=True` is "the cluster path": every MQTT client logs in with one of our JWTs as password, checked by
`orderbus responder` (a separate process, over an SQLite database made here); `auth=False` uses the
development user (a password in the config) to show what the callout costs. Not a test: no assertions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.nats.callout import Credentials, authorization_block
from broker.nats.cluster import Cluster, mqtt_connect_once
from broker.nats.conf import NatsLimits
from broker.nats.layout import DEV_USER, Node
from core.tokens import TokenService
from scripts.ports import free_port

KEY = b"bench-key-not-a-secret-0123456789abcdef"  # the same as bench_broker.py's, so its tokens work here
RID = 7


class NatsBench:
    """N nodes in a temporary directory, the responder when `auth`; `stop()` removes everything."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        auth: bool = True,
        limits: NatsLimits = NatsLimits(),
        pin: str = "",
        callout_timeout: float = 2,
        responders: int = 1,
        responder_workers: int = 1,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bench-nats-"))
        self.auth = auth
        self.tokens = TokenService(KEY)
        self.responders: list[subprocess.Popen[bytes]] = []
        self.responder_count, self.responder_workers = responders, responder_workers
        self.env = {**os.environ, "ORDERBUS_DATA_DIR": str(self.directory / "data"), "ORDERBUS_JWT_KEY": KEY.decode()}
        block = None
        if auth:
            credentials = Credentials.load_or_create(self.directory / "data")
            block = authorization_block(
                credentials.issuer_public_key,
                credentials.auth_user,
                credentials.auth_password,
                timeout_seconds=callout_timeout,  # the callout's `authorization { timeout }` (2 s by default)
            )
        self.cluster = Cluster(self.directory / "nats", nodes, auth=block, limits=limits, pick_port=free_port)
        self.pin = pin  # a CPU list for taskset (e.g. "0": the nodes share core 0, as bench_broker pins brokers)

    def __enter__(self) -> NatsBench:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def nodes(self) -> list[Node]:
        return self.cluster.nodes

    def start(self) -> float:
        """Nodes ready, responder answering, one MQTT login per node done; returns the seconds it took."""
        began = time.monotonic()
        if self.auth:
            orderbus = [sys.executable, "-m", "cli.main"]
            root = str(Path(__file__).resolve().parents[1])
            self.env["PYTHONPATH"] = root
            subprocess.run([*orderbus, "db", "upgrade"], env=self.env, cwd=root, check=True, capture_output=True)
        self.cluster.start()
        self._pin()
        if self.auth:
            urls = [node.nats_url for node in self.nodes]
            workers = ["--workers", str(self.responder_workers)] if self.responder_workers > 1 else []
            for i in range(self.responder_count):
                # one responder: every node's URL (nats-py picks one at random); several: responder i on node
                # i mod N only, so that each node answers its own logins (docs/deploy.md)
                broker = ",".join(urls) if self.responder_count == 1 else urls[i % len(urls)]
                log = (self.directory / f"responder-{i}.log").open("ab")
                self.responders.append(
                    subprocess.Popen(
                        [*orderbus, "responder", "--broker", broker, *workers],
                        env=self.env,
                        cwd=root,
                        stdout=log,
                        stderr=log,
                    )
                )
            self._warm_up()
        return time.monotonic() - began

    def _warm_up(self, timeout: float = 60) -> None:
        """One login per node, in turn (Cluster.warm_up's reason); the callout wants the client id to be the
        token's subject, and mqtt_connect_once's client id is `orderbus-warm-up-<node>`."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not self.connects(node.index, "service") and time.monotonic() < deadline:
                time.sleep(0.2)

    def _pin(self) -> None:
        if self.pin:
            for node in self.nodes:
                if node.process is not None:
                    subprocess.run(["taskset", "-a", "-cp", self.pin, str(node.process.pid)], capture_output=True)

    def token(self, client_id: str, role: str, rid: int | None = RID) -> str:
        return self.tokens.issue(
            sub=client_id, role=role, rid=None if role == "service" else rid, audience="mqtt", ttl_seconds=3600
        )

    def login(self, client_id: str, role: str, rid: int | None = RID) -> tuple[str, str]:
        """(username, password) for an MQTT client: our token through the callout, or the development user."""
        if self.auth:
            return client_id, self.token(client_id, role, rid)
        return DEV_USER, self.cluster.password

    def mqtt_port(self, index: int) -> int:
        return self.nodes[index % len(self.nodes)].ports.mqtt

    def ws_port(self, index: int) -> int:
        return self.nodes[index % len(self.nodes)].ports.websocket

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.process is not None]

    def cpu_seconds(self) -> float:
        """User + system CPU of every running node so far."""
        total = 0.0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_kib(self) -> int:
        """The RSS of every running node, summed."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def kill(self, index: int) -> None:
        self.cluster.kill(index)

    def restart(self, index: int) -> None:
        self.cluster.restart(index)
        self._pin()

    def connects(self, index: int, role: str) -> bool:
        user, password = self.login(f"orderbus-warm-up-{self.nodes[index].name}", role)
        return mqtt_connect_once(self.nodes[index], user, password, timeout=10) == 0

    def responder_summary(self) -> dict[str, int]:
        """What the responders logged, counted: `allowed`, `refused <reason>`, `dropped` (read after the
        request's deadline), `internal error`."""
        seen: dict[str, int] = {}
        for path in sorted(self.directory.glob("responder-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if "callout allowed" in line:
                    key = "allowed"
                elif "callout refused" in line:
                    key = "refused " + (line.split("reason=")[1].split()[0] if "reason=" in line else "malformed/other")
                elif "callout dropped" in line:
                    key = "dropped (past deadline)"
                else:
                    continue
                seen[key] = seen.get(key, 0) + 1
        return dict(sorted(seen.items(), key=lambda item: -item[1]))

    def stop(self) -> None:
        for responder in self.responders:
            responder.terminate()
            try:
                responder.wait(10)
            except subprocess.TimeoutExpired:
                responder.kill()
                responder.wait(5)
        self.responders = []
        self.cluster.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
