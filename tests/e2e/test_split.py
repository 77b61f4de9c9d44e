"""The parts run apart: `orderbus broker`, `orderbus bridge` and `orderbus api` as real processes on one
data directory. An order committed by the API wakes the relay in the bridge process at once (the
relay's idle poll is 5 s, so a bound of 2 s fails without the wake), also after the bridge was
killed and restarted over its stale socket file, and the API takes orders while no relay runs."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from core.tokens import TokenService, load_or_create_key
from core.wake import SOCKET_NAME
from tests.support import Proc, Site, Subscriber, free_port, sqlite_engine, wait_for

pytestmark = pytest.mark.e2e
ORDERBUS = str(Path(sys.executable).parent / "orderbus")
# From the POST's response to the subscriber. The relay's idle poll is 5 s: without a wake, an order
# placed right after the previous one went out waits nearly all of it. Loose for a loaded machine.
WAKE_BOUND_SECONDS = 2.0


class Seeded(Site):
    """A restaurant with one item, written straight into the data directory before any process starts."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = Settings(data_dir=data_dir)
        self.engine = sqlite_engine(self.settings)
        self.tokens = TokenService(load_or_create_key(data_dir, None))
        self.rid = self.add_restaurant("Split", "split@example.com")
        self.item = self.add_menu_item(self.rid, "soup")


@dataclass
class Split:
    site: Seeded
    data_dir: Path
    http_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    parts: list[Proc] = field(default_factory=list)

    def start(self, command: str, *args: str, metrics_port: int | None = None, **env: str) -> Proc:
        flags = {
            "broker": ["--mqtt-port", str(self.mqtt_port), "--ws-port", str(self.ws_port)],
            "bridge": ["--mqtt-port", str(self.mqtt_port)],
            "api": ["--http-port", str(self.http_port)],
        }[command]
        if metrics_port:
            env["ORDERBUS_METRICS_PORT"] = str(metrics_port)
        name = f"{command}-{time.monotonic_ns()}"
        part = Proc(
            name, [command, "--data-dir", str(self.data_dir), *flags, *args], env, self.data_dir.parent / f"{name}.log"
        )
        self.parts.append(part)  # stopped after the test even when it does not come up
        return part.start()

    def admin(self) -> httpx.Client:
        token = self.site.api_token("split-admin", "admin", self.site.rid)
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}/api/v1",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )

    def order(self, admin: httpx.Client) -> int:
        response = admin.post(
            f"/restaurants/{self.site.rid}/orders", json={"items": [{"menu_item_id": self.site.item, "quantity": 1}]}
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def watcher(self, name: str = "split-dash") -> Subscriber:
        subscriber = Subscriber(self.mqtt_port, name, self.site.mqtt_token(name, "admin", self.site.rid))
        assert subscriber.connect() == 0
        assert subscriber.subscribe(f"restaurant/{self.site.rid}/orders") == 1
        return subscriber


@pytest.fixture
def split(tmp_path) -> Iterator[Split]:
    data_dir = tmp_path / "data"
    running = Split(Seeded(data_dir), data_dir)
    yield running
    for part in reversed(running.parts):
        part.stop()
    running.site.engine.dispose()


def new_order_ids(watcher: Subscriber, count: int, timeout: float) -> list[int]:
    return [
        message.json()["data"]["order"]["id"]
        for message in watcher.collect(count, timeout=timeout)
        if message.json()["type"] == "new_order"
    ]


def assert_orders_arrive_at_once(split: Split, watcher: Subscriber, admin: httpx.Client, orders: int = 5) -> None:
    """Each order reaches the subscriber within the bound, one at a time, the relay idle before each."""
    for _ in range(orders):
        time.sleep(0.2)  # the relay has gone back to waiting
        order_id = split.order(admin)
        responded = time.monotonic()
        assert new_order_ids(watcher, 1, timeout=WAKE_BOUND_SECONDS) == [order_id]
        assert time.monotonic() - responded < WAKE_BOUND_SECONDS


def test_an_order_reaches_a_subscriber_at_once_with_the_parts_apart_also_after_a_kill_9_of_the_bridge(split):
    split.start("broker")
    bridge = split.start("bridge")
    split.start("api")
    watcher = split.watcher()
    try:
        with split.admin() as admin:
            first = split.order(admin)  # the relay may still be connecting: no bound on this one
            assert new_order_ids(watcher, 1, timeout=15) == [first]
            assert_orders_arrive_at_once(split, watcher, admin)

            bridge.stop(signal.SIGKILL)  # leaves relay.sock behind, bound by nobody
            socket_file = split.data_dir / SOCKET_NAME
            assert socket_file.is_socket()
            taken = split.order(admin)  # the API signals a dead socket: no error, no wait
            split.start("bridge")
            # The killed relay may have had an order acknowledged but not stamped: it goes out again
            # (at least once). Nothing else may come before the order taken while no relay ran.
            arrived: list[int] = []
            while taken not in arrived:
                arrived += new_order_ids(watcher, 1, timeout=15)
            assert set(arrived) - {taken} <= set(range(first, taken)), arrived
            assert_orders_arrive_at_once(split, watcher, admin)
    finally:
        watcher.close()
    assert "Traceback" not in "".join(part.output() for part in split.parts if part.argv[0] == "api")


def test_the_api_takes_orders_quickly_while_no_relay_runs_and_they_go_out_when_one_starts(split):
    api = split.start("api")
    with split.admin() as admin:
        split.order(admin)  # warm: the first request builds caches
        started = time.monotonic()
        taken = [split.order(admin) for _ in range(5)]
        assert time.monotonic() - started < 5 * 0.5  # nobody listens: no timeout, no retry, no error
        assert not (split.data_dir / SOCKET_NAME).exists()

        split.start("broker")
        watcher = split.watcher()
        try:
            split.start("bridge")
            assert new_order_ids(watcher, 6, timeout=15)[1:] == taken  # the relay's first pass
            assert (split.data_dir / SOCKET_NAME).is_socket()
            assert_orders_arrive_at_once(split, watcher, admin, orders=2)
        finally:
            watcher.close()
        ready = httpx.get(f"http://127.0.0.1:{split.http_port}/readyz", timeout=10)
        assert ready.status_code == 200 and list(ready.json()["checks"]) == ["database"]  # no broker named
    assert "Traceback" not in api.output() and "WARNING" not in api.output()


def readyz(port: int) -> tuple[int, dict]:
    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    return response.status_code, response.json()


def test_each_part_apart_is_ready_when_what_it_depends_on_is(split):
    """The API told where the broker is probes that broker; the bridge reports its own connections and
    the outbox lag; the broker its listeners. A broker that is down (not started, then kill -9) makes
    the API and the bridge answer 503 naming `broker`, and ready again when it is back."""
    bridge_port, broker_port = free_port(), free_port()
    split.start("api", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(split.mqtt_port))
    # the seeded rows' events wait for the broker too; a slow start must not fail the lag check
    split.start("bridge", metrics_port=bridge_port, ORDERBUS_READY_MAX_OUTBOX_LAG_SECONDS="600")

    status, body = readyz(split.http_port)
    assert (status, body["status"], body["failed"]) == (503, "not ready", ["broker"]), body
    assert list(body["checks"]) == ["database", "broker"]
    assert body["checks"]["broker"]["address"] == f"127.0.0.1:{split.mqtt_port}"
    assert "ConnectionRefusedError" in body["checks"]["broker"]["error"]
    status, body = readyz(bridge_port)
    assert (status, body["failed"]) == (503, ["broker"]), body
    assert list(body["checks"]) == ["database", "broker", "relay"]
    assert body["checks"]["broker"]["error"] == "not connected to the broker: relay, ingest"

    broker = split.start("broker", metrics_port=broker_port)
    status, body = readyz(broker_port)
    assert (status, list(body["checks"])) == (200, ["database", "broker", "listeners"]), body
    wait_for(lambda: readyz(split.http_port)[0] == 200, timeout=15)
    wait_for(lambda: readyz(bridge_port)[0] == 200, timeout=15)  # the relay and the ingest reconnect

    broker.stop(signal.SIGKILL)
    status, body = readyz(split.http_port)
    assert (status, body["failed"]) == (503, ["broker"]), body
    wait_for(lambda: readyz(bridge_port)[1]["failed"] == ["broker"], timeout=15)
    split.start("broker", metrics_port=broker_port)
    wait_for(lambda: readyz(split.http_port)[0] == 200, timeout=15)
    wait_for(lambda: readyz(bridge_port)[0] == 200, timeout=15)
