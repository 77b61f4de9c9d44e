"""PostgreSQL killed (-9, postmaster and backends) during a burst of orders, then started again.

On a server of the test's own (`tests.postgres.private_server`), never the shared one. The API
runs in-process (the whole ASGI app through TestClient, which raises any unhandled exception, so
a 500 cannot pass unseen). While the server is down every request is answered 503 with
Retry-After and a one-line JSON error, counted; nothing is half-written (an order that exists has
its line, its stock taken and its event); after the restart the API serves again by itself, and
the outbox the relay reads is gap-free."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import col, select

from config.settings import Settings
from core.db import make_engine, upgrade
from core.models import MenuItem, Order, OrderItem, OutboxEvent, Restaurant
from core.unit_of_work import UnitOfWork
from tests.postgres import PrivateServer, private_server
from tests.support import App, Stack, Subscriber, add_burger_and_fries, wait_for

pytestmark = pytest.mark.e2e
STOCK = 100_000
METRIC = "orderbus_http_database_unavailable_total"


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    with private_server() as running:
        yield running


@dataclass
class Burst:
    """Orders of one burger, posted in a loop by `threads` clients until stopped; every answer kept."""

    app: App
    token: str = field(repr=False)
    rid: int
    burger: int
    answers: list[tuple[int, int, dict[str, Any], dict[str, str]]] = field(default_factory=list)  # (n, status, …)
    crashes: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, threads: int = 2) -> list[threading.Thread]:
        started = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]
        for thread in started:
            thread.start()
        return started

    def _loop(self) -> None:
        client = self.app.http(self.token)
        body = {"items": [{"menu_item_id": self.burger, "quantity": 1}]}
        while not self.stop.is_set():
            try:
                response = client.post(f"/restaurants/{self.rid}/orders", json=body)
            except BaseException as exc:  # an unhandled server error: TestClient raises it here
                self.crashes.append(exc)
                return
            with self._lock:
                self.answers.append((len(self.answers), response.status_code, response.json(), dict(response.headers)))

    def count(self, status: int, since: int = 0) -> int:
        with self._lock:
            return sum(1 for n, code, _, _ in self.answers if code == status and n >= since)

    def __len__(self) -> int:
        with self._lock:
            return len(self.answers)


def unavailable() -> float:
    return REGISTRY.get_sample_value(METRIC, {"reason": "unavailable"}) or 0.0


def test_a_postgres_crash_mid_burst_answers_503_writes_nothing_half_and_recovers(server: PrivateServer, tmp_path):
    url = server.create_database()
    engine = make_engine(url)
    upgrade(engine)
    app = App(Settings(data_dir=tmp_path / "data", database_url=url), engine)
    rid = app.add_restaurant("Crash Diner", "admin@crash.test")
    token = app.api_token("admin@crash.test", "admin", rid)
    burger, _fries = add_burger_and_fries(app.http(token), rid, stock=STOCK, low_stock=0)
    counted_before = unavailable()

    burst = Burst(app, token, rid, burger["id"])
    threads = burst.run()
    try:
        wait_for(lambda: burst.count(201) >= 20 or burst.crashes, timeout=60)
        server.kill()  # mid-burst: requests in flight lose their connection
        down_from = len(burst)
        wait_for(lambda: burst.count(503, since=down_from) >= 10 or burst.crashes, timeout=60)
        keyed = app.http(token)
        retried = {"items": [{"menu_item_id": burger["id"], "quantity": 1}]}
        while_down = keyed.post(f"/restaurants/{rid}/orders", json=retried, headers={"Idempotency-Key": "tap-1"})
        server.start()  # crash recovery on the same data
        up_from = len(burst)
        wait_for(lambda: burst.count(201, since=up_from) >= 10 or burst.crashes, timeout=60)
        # the client's retry of the refused write, with its key: done once, and a second retry replays it
        retry = [keyed.post(f"/restaurants/{rid}/orders", json=retried, headers={"Idempotency-Key": "tap-1"})]
        retry.append(keyed.post(f"/restaurants/{rid}/orders", json=retried, headers={"Idempotency-Key": "tap-1"}))
    finally:
        burst.stop.set()
        for thread in threads:
            thread.join(30)
    assert not burst.crashes, burst.crashes[:1]
    assert while_down.status_code == 503 and [r.status_code for r in retry] == [201, 201], while_down.text
    assert retry[0].json() == retry[1].json() and retry[1].headers["idempotent-replayed"] == "true"

    statuses = {code for _, code, _, _ in burst.answers}
    assert statuses <= {201, 503}, statuses
    refused = [(body, headers) for _, code, body, headers in burst.answers if code == 503]
    for body, headers in refused:
        assert set(body) == {"detail"} and body["detail"].startswith("the database is unavailable (unavailable)")
        assert "Traceback" not in body["detail"] and "\n" not in body["detail"]
        assert int(headers["retry-after"]) > 0
    assert unavailable() - counted_before == len(refused) + 1  # the burst's and the keyed one's

    accepted = {body["id"] for _, code, body, _ in burst.answers if code == 201} | {retry[0].json()["id"]}
    check_nothing_half_written(engine, rid, burger["id"], accepted, ambiguous=len(refused))
    engine.dispose()


def check_nothing_half_written(engine: Engine, rid: int, burger_id: int, accepted: set[int], ambiguous: int) -> None:
    """Every 201 is stored whole; whatever else is stored (a commit cut off by the crash after the
    server wrote it, answered 503) is whole too; stock and the outbox agree with the orders."""
    with UnitOfWork(engine) as uow:
        stored = {int(i or 0) for i in uow.session.exec(select(Order.id).where(Order.restaurant_id == rid))}
        lines = [
            (line.order_id, line.menu_item_id, line.quantity)
            for line in uow.session.exec(select(OrderItem).where(col(OrderItem.order_id).in_(stored)))
        ]
        events = [
            (e.seq, e.type, e.envelope)
            for e in uow.session.exec(select(OutboxEvent).where(OutboxEvent.restaurant_id == rid))
        ]
        item = uow.session.get(MenuItem, burger_id)
        restaurant = uow.session.get(Restaurant, rid)
        assert item is not None and restaurant is not None
        stock_left, event_seq = item.stock_quantity, restaurant.event_seq
    assert accepted <= stored, sorted(accepted - stored)[:5]
    assert len(stored - accepted) <= ambiguous
    assert sorted(order_id for order_id, _, _ in lines) == sorted(stored)  # one line each, none missing
    assert all((item_id, quantity) == (burger_id, 1) for _, item_id, quantity in lines)
    announced = [envelope["data"]["order"]["id"] for _, type_, envelope in events if type_ == "new_order"]
    assert sorted(announced) == sorted(stored)  # each stored order has its event, and only they do
    assert stock_left == STOCK - len(stored)
    seqs = sorted(seq for seq, _, _ in events)
    assert seqs == list(range(1, len(seqs) + 1)) and event_seq == len(seqs)


def test_the_bus_on_postgres_publishes_every_order_in_seq_order_across_a_crash(server: PrivateServer, tmp_path):
    """`orderbus up` on the private server (broker, API over real HTTP, relay, ingest): orders
    before, during and after a kill -9 of PostgreSQL. Once it is back, the relay publishes every
    stored order's event, in seq order, by itself; a dashboard receives each once."""
    url = server.create_database()
    stack = Stack(tmp_path / "data", database_url=url).start()
    subscriber: Subscriber | None = None
    try:
        rid = stack.add_restaurant("Bus Diner", "admin@bus.test")
        admin = stack.http(stack.api_token("admin@bus.test", "admin", rid))
        burger, _fries = add_burger_and_fries(admin, rid, stock=STOCK, low_stock=0)
        subscriber = Subscriber(stack.settings.mqtt_port, "dash-bus", stack.mqtt_token("dash-bus", "admin", rid))
        assert subscriber.connect() == 0 and subscriber.subscribe(f"restaurant/{rid}/orders") != 0x80
        body = {"items": [{"menu_item_id": burger["id"], "quantity": 1}]}
        codes = [admin.post(f"/restaurants/{rid}/orders", json=body).status_code for _ in range(10)]
        server.kill()
        codes += [admin.post(f"/restaurants/{rid}/orders", json=body).status_code for _ in range(5)]
        server.start()
        codes += [admin.post(f"/restaurants/{rid}/orders", json=body).status_code for _ in range(10)]
        assert codes == [201] * 10 + [503] * 5 + [201] * 10, codes  # back by itself, no restart of the bus
        stored = wait_for(lambda: all_published(stack.engine, rid), timeout=60)
        first: dict[str, dict[str, Any]] = {}  # by event id, as every consumer dedupes (DESIGN.md)

        def arrived() -> bool:
            for message in subscriber.drain(0.1):
                first.setdefault(message.json()["id"], message.json())
            return len(first) >= stored

        wait_for(arrived, timeout=30)
    finally:
        if subscriber is not None:
            subscriber.close()
        stack.stop()
    # An event published just before the crash, whose "published" mark the crash lost, is published
    # again after it (at least once); a consumer keeps the first copy, and those come in seq order.
    seqs = [envelope["seq"] for envelope in first.values()]
    assert len(first) == stored and seqs == sorted(seqs), seqs


def all_published(engine: Engine, rid: int) -> int | None:
    """The number of new_order events once every event of the restaurant is published, else None."""
    with UnitOfWork(engine) as uow:
        rows = list(uow.session.exec(select(OutboxEvent).where(OutboxEvent.restaurant_id == rid)))
        pending = [row.seq for row in rows if row.published_at is None]
        return None if pending else sum(1 for row in rows if row.type == "new_order")
