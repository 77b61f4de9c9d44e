"""Two `orderbus api` processes on one PostgreSQL database, as production runs them behind a proxy:
the last burger, ordered through both at the same moment, goes to exactly one (201, the other 409),
and nothing of the refused order is written. The schema comes from `orderbus db upgrade`."""

from __future__ import annotations

import functools
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, make_url
from sqlmodel import col, select

from core.commands import MenuIn, MenuItemIn
from core.db import make_engine
from core.models import Menu, MenuItem, Order, OrderItem, OutboxEvent, Restaurant
from core.services import menu as menu_service
from core.tokens import TokenService
from core.unit_of_work import UnitOfWork
from tests.e2e.test_db_cli import ORDERBUS, one_line_error, orderbus
from tests.postgres import PREFIX, SERVER, fresh_database
from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e
ROUNDS = 5


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database("two_apis") as url:
        done = orderbus("db", "upgrade", "--database-url", url)
        assert done.returncode == 0, done.stderr
        yield url


def start_api(tmp_path: Path, name: str, url: str, key: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port, log = free_port(), tmp_path / f"{name}.log"
    command = [ORDERBUS, "api", "--data-dir", str(tmp_path / name), "--http-port", str(port), "--database-url", url]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, env={**os.environ, "ORDERBUS_JWT_KEY": key})
    return process, f"http://127.0.0.1:{port}/api/v1", log


def started(process: subprocess.Popen[bytes], log: Path) -> bool:
    """Up, or gone (the caller then shows why)."""
    return process.poll() is not None or "Ctrl-C to stop" in log.read_text()


def setup_restaurant(engine: Engine) -> tuple[int, list[int]]:
    """A restaurant with ROUNDS burgers, one in stock each."""
    with UnitOfWork(engine) as uow:
        restaurant = Restaurant(name="Two Doors")
        uow.session.add(restaurant)
        uow.session.flush()
        assert restaurant.id is not None
        menu = menu_service.create_row(uow, Menu, restaurant.id, MenuIn(name="Menu"))
        assert menu.id is not None
        burgers = [
            menu_service.create_item(
                uow,
                restaurant.id,
                MenuItemIn(
                    menu_id=menu.id, name=f"Burger {n}", price_cents=1200, enable_stock_tracking=True, stock_quantity=1
                ),
            ).id
            for n in range(ROUNDS)
        ]
        uow.commit()
        return restaurant.id, [b for b in burgers if b is not None]


def test_two_api_processes_sell_the_last_burger_once(database: str, tmp_path):
    engine = make_engine(database)
    rid, burgers = setup_restaurant(engine)
    key = secrets.token_hex(32)
    token = TokenService(key.encode()).issue(sub="admin", role="admin", rid=rid, audience="api", ttl_seconds=600)
    # a password in the URL (the local server trusts, so it goes unused) must never be printed
    with_password = make_url(database).set(password="pw-s3cret").render_as_string(hide_password=False)
    apis = [start_api(tmp_path, name, with_password, key) for name in ("api-a", "api-b")]
    try:
        for process, _base, log in apis:
            wait_for(functools.partial(started, process, log), timeout=30)
            assert process.poll() is None, log.read_text()
        clients = [httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}) for _, base, _ in apis]
        answers = [race(clients, rid, burger) for burger in burgers]
        # bad input through the same processes: more than there is, and an item that does not exist
        too_many = clients[0].post(f"/restaurants/{rid}/orders", json=order_of(burgers[0], 2))
        unknown = clients[1].post(f"/restaurants/{rid}/orders", json=order_of(10**6, 1))
    finally:
        for process, _base, _log in apis:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(30) for process, _base, _log in apis]
    assert codes == [0, 0]
    for _process, _base, log in apis:
        assert "pw-s3cret" not in log.read_text() and "postgres:***@" in log.read_text()

    for burger, pair in zip(burgers, answers, strict=True):
        assert sorted(code for code, _ in pair) == [201, 409], pair
        refused = next(body for code, body in pair if code == 409)
        assert f"Burger {burgers.index(burger)}" in str(refused["detail"]), refused
    assert too_many.status_code == 409 and unknown.status_code == 404, (too_many.text, unknown.text)

    with UnitOfWork(engine) as uow:
        stock = [uow.session.get(MenuItem, b).stock_quantity for b in burgers]  # type: ignore[union-attr]
        orders = list(uow.session.exec(select(Order.id).where(Order.restaurant_id == rid)))
        lines = list(uow.session.exec(select(OrderItem.menu_item_id).where(col(OrderItem.order_id).in_(orders))))
        seqs = list(uow.session.exec(select(OutboxEvent.seq).where(OutboxEvent.restaurant_id == rid)))
        new_orders = list(uow.session.exec(select(OutboxEvent.id).where(OutboxEvent.type == "new_order")))
    engine.dispose()
    assert stock == [0] * ROUNDS
    assert len(orders) == ROUNDS and sorted(lines) == sorted(burgers)  # the refused wrote no order, no line
    assert len(new_orders) == ROUNDS
    assert sorted(seqs) == list(range(1, len(seqs) + 1))


def order_of(item_id: int, quantity: int) -> dict[str, object]:
    return {"items": [{"menu_item_id": item_id, "quantity": quantity}]}


def race(clients: list[httpx.Client], rid: int, burger: int) -> list[tuple[int, dict[str, object]]]:
    """The same order through each process, released together."""
    barrier = threading.Barrier(len(clients))
    answers: list[tuple[int, dict[str, object]]] = []
    lock = threading.Lock()

    def order(client: httpx.Client) -> None:
        barrier.wait(10)
        response = client.post(f"/restaurants/{rid}/orders", json=order_of(burger, 1))
        with lock:
            answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=order, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


@pytest.mark.parametrize("command", ["api", "bridge", "up"])
def test_a_postgres_database_that_does_not_exist_is_one_line_on_every_command(command: str, tmp_path):
    """`--database-url` on the command line, a server that answers, a database it does not have."""
    url = make_url(SERVER).set(drivername="postgresql+psycopg", database=f"{PREFIX}missing_{secrets.token_hex(4)}")
    ports = ["--http-port", str(free_port())] if command != "bridge" else ["--mqtt-port", str(free_port())]
    if command == "up":
        ports += ["--mqtt-port", str(free_port()), "--ws-port", str(free_port())]
    shown = url.render_as_string(hide_password=False)
    line = one_line_error(orderbus(command, "--data-dir", str(tmp_path / "data"), *ports, "--database-url", shown))
    assert "does not exist" in line and "--database-url" in line, line
