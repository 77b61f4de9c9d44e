"""Read-modify-writes under concurrency, on SQLite and on PostgreSQL: threads, each with its own unit
of work, released together by a barrier. SQLite's writer lock serialises them by itself; on
PostgreSQL only the row locks of `core.locking` do (without them, ten orders of 4 Lemonade against
30 in stock were all accepted). Each test checks the sums afterwards, not only the answers."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import col, select

from bridge.ingest import DeviceMessage
from bridge.tablet_events import apply_tablet_event
from config.settings import Settings
from core.commands import MenuIn, MenuItemIn, OrderIn, OrderItemIn
from core.domain import DomainError, OrderStatus
from core.models import (
    Device,
    Menu,
    MenuItem,
    Notification,
    Order,
    OrderItem,
    OutboxEvent,
    Refund,
    Restaurant,
    Ticket,
    utcnow,
)
from core.rules.payments import LineRefund
from core.services import devices, inventory, orders, refunds, tickets
from core.services import menu as menu_service
from core.unit_of_work import UnitOfWork
from tests.support import App

THREADS = 10


def restaurant(engine: Engine) -> int:
    with UnitOfWork(engine) as uow:
        row = Restaurant(name="Race")
        uow.session.add(row)
        uow.commit()
        assert row.id is not None
        return row.id


def item(engine: Engine, rid: int, name: str, stock: int | None, price_cents: int = 300) -> int:
    """A menu item, stock-tracked with `stock` unless it is None."""
    with UnitOfWork(engine) as uow:
        menu = uow.session.exec(select(Menu).where(Menu.restaurant_id == rid)).first()
        menu_id = menu.id if menu else menu_service.create_row(uow, Menu, rid, MenuIn(name="Menu")).id
        assert menu_id is not None
        body = MenuItemIn(
            menu_id=menu_id,
            name=name,
            price_cents=price_cents,
            enable_stock_tracking=stock is not None,
            stock_quantity=stock or 0,
        )
        row = menu_service.create_item(uow, rid, body)
        uow.commit()
        assert row.id is not None
        return row.id


def at_once(engine: Engine, work: Callable[[UnitOfWork, int], Any], threads: int = THREADS) -> list[Any]:
    """`work(uow, i)` on `threads` threads released together, each in its own unit of work that it
    commits; each result, or the DomainError it raised (those roll back)."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(i: int) -> None:
        barrier.wait(10)
        try:
            with UnitOfWork(engine) as uow:
                value = work(uow, i)
                uow.commit()
            results[i] = value
        except DomainError as exc:
            results[i] = exc
        except BaseException as exc:  # shown by the assertion below, on the test's thread
            results[i] = ("crashed", exc)

    running = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(60)
    assert not any(thread.is_alive() for thread in running), "a thread is still waiting on the database"
    crashed = [r for r in results if isinstance(r, tuple)]
    assert not crashed, crashed
    return results


def won(results: list[Any]) -> list[Any]:
    return [r for r in results if not isinstance(r, DomainError)]


def stock(engine: Engine, item_id: int) -> int:
    with UnitOfWork(engine) as uow:
        row = uow.session.get(MenuItem, item_id)
        assert row is not None
        return row.stock_quantity


def sold(engine: Engine, item_id: int) -> int:
    """Units of the item on orders that are not cancelled."""
    with UnitOfWork(engine) as uow:
        query = (
            select(func.coalesce(func.sum(OrderItem.quantity), 0))
            .join(Order, col(Order.id) == col(OrderItem.order_id))
            .where(OrderItem.menu_item_id == item_id, Order.status != OrderStatus.CANCELLED)
        )
        return int(uow.session.exec(query).one())


def seqs(engine: Engine, rid: int, type_: str | None = None) -> list[int]:
    with UnitOfWork(engine) as uow:
        query = select(OutboxEvent.seq).where(OutboxEvent.restaurant_id == rid)
        if type_ is not None:
            query = query.where(OutboxEvent.type == type_)
        return list(uow.session.exec(query.order_by(col(OutboxEvent.seq))))


def order_of(item_id: int, quantity: int) -> OrderIn:
    return OrderIn(items=[OrderItemIn(menu_item_id=item_id, quantity=quantity)])


def sell(rid: int, item_id: int, quantity: int, uow: UnitOfWork, _i: int) -> int | None:
    return orders.place_order(uow, rid, order_of(item_id, quantity)).order.id


def test_ten_orders_of_4_lemonade_against_30_in_stock_sell_7(db: Engine):
    rid = restaurant(db)
    lemonade = item(db, rid, "Lemonade", 30)
    results = at_once(db, functools.partial(sell, rid, lemonade, 4))
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(won(results)) == 7 and len(refused) == 3, results
    assert all("Lemonade" in str(r) for r in refused)
    assert stock(db, lemonade) == 2 and sold(db, lemonade) == 28
    assert len(seqs(db, rid, "new_order")) == 7  # a refused order wrote no event either
    assert seqs(db, rid) == list(range(1, len(seqs(db, rid)) + 1))


def test_the_last_burger_sold_by_two_at_once_goes_to_one(db: Engine):
    rid = restaurant(db)
    for round_ in range(5):
        burger = item(db, rid, f"Burger {round_}", 1)
        results = at_once(db, functools.partial(sell, rid, burger, 1), threads=2)
        assert len(won(results)) == 1, results
        assert stock(db, burger) == 0 and sold(db, burger) == 1


def test_orders_and_stock_adjustments_at_once_add_up(db: Engine):
    """Half the threads order 3, half receive 2: nothing is lost either way."""
    rid = restaurant(db)
    fries = item(db, rid, "Fries", 40)

    def work(uow: UnitOfWork, i: int) -> Any:
        if i % 2:
            return inventory.adjust_stock(uow, rid, fries, 2, "delivery").stock_quantity
        return orders.place_order(uow, rid, order_of(fries, 3)).order.id

    assert len(won(at_once(db, work))) == THREADS
    assert stock(db, fries) == 40 + 5 * 2 - 5 * 3
    assert sold(db, fries) == 15


def test_cancelling_one_order_from_many_threads_restocks_it_once(db: Engine):
    rid = restaurant(db)
    soup = item(db, rid, "Soup", 10)
    with UnitOfWork(db) as uow:
        order_id = orders.place_order(uow, rid, order_of(soup, 4)).order.id
        uow.commit()
    assert order_id is not None and stock(db, soup) == 6
    results = at_once(db, lambda uow, _i: orders.change_status(uow, rid, order_id, OrderStatus.CANCELLED).order.version)
    assert won(results) == [2], results  # one cancel, version 1 → 2; the others found it cancelled
    assert stock(db, soup) == 10
    with UnitOfWork(db) as uow:
        types = list(uow.session.exec(select(OutboxEvent.type).where(OutboxEvent.type == "order_updated")))
    assert len(types) == 1


def test_refunds_at_once_never_exceed_the_total_and_lose_no_version(db: Engine):
    rid = restaurant(db)
    pie = item(db, rid, "Pie", None, price_cents=1200)
    order_id = paid_order(db, rid, pie)
    results = at_once(db, lambda uow, _i: refund(uow, rid, order_id, 200).order.refunded_cents)
    assert sorted(won(results)) == [200, 400, 600, 800, 1000, 1200], results
    with UnitOfWork(db) as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        assert (order.refunded_cents, order.version) == (1200, 2 + 6)  # paid, then 6 refunds
        amounts = list(uow.session.exec(select(Refund.amount_cents).where(Refund.order_id == order_id)))
    assert sum(amounts) == 1200 and len(amounts) == 6


def test_line_refunds_at_once_never_give_back_more_units_than_ordered(db: Engine):
    """Ten threads each refund one unit of a line of 3: three win, and the units recorded are 3."""
    rid = restaurant(db)
    soup = item(db, rid, "Soup", None, price_cents=500)
    order_id = paid_order(db, rid, soup, quantity=3)
    with UnitOfWork(db) as uow:
        line_id = orders.view_of(uow, orders.get_order(uow, rid, order_id)).lines[0].id
    assert line_id is not None

    def work(uow: UnitOfWork, _i: int) -> int:
        done = refunds.refund(
            uow, rid, order_id, amount_cents=None, reason="cold", lines=[LineRefund(line_id, 1)], by=BY
        )
        return done.view.order.refunded_cents

    assert sorted(won(at_once(db, work))) == [500, 1000, 1500]
    with UnitOfWork(db) as uow:
        rows = list(uow.session.exec(select(Refund).where(Refund.order_id == order_id)))
        order = uow.session.get(Order, order_id)
        assert order is not None and order.refunded_cents == sum(row.amount_cents for row in rows) == 1500
        assert sum(line["quantity"] for row in rows for line in row.lines) == 3


BY = refunds.Refunder("user-1", 1)


def paid_order(db: Engine, rid: int, menu_item_id: int, quantity: int = 1) -> int:
    with UnitOfWork(db) as uow:
        order_id = orders.place_order(uow, rid, order_of(menu_item_id, quantity)).order.id
        assert order_id is not None
        refunds.pay(uow, rid, order_id)
        uow.commit()
    return order_id


def refund(uow: UnitOfWork, rid: int, order_id: int, amount_cents: int) -> orders.OrderView:
    return refunds.refund(uow, rid, order_id, amount_cents=amount_cents, reason="cold", lines=[], by=BY).view


def test_status_changes_and_refunds_at_once_count_every_version(db: Engine):
    """Moves along the kitchen (each thread tries the next step) and refunds on one order: every
    change that succeeds bumps the version once, and the last event carries the final version."""
    rid = restaurant(db)
    cake = item(db, rid, "Cake", None, price_cents=1000)
    order_id = paid_order(db, rid, cake)
    steps = [OrderStatus.PREPARING, OrderStatus.READY, OrderStatus.COMPLETED]

    def work(uow: UnitOfWork, i: int) -> Any:
        if i % 2:
            return refund(uow, rid, order_id, 100).order.version
        current = orders.get_order(uow, rid, order_id).status  # a guess: change_status decides, locked
        following = {OrderStatus.PENDING: steps[0], steps[0]: steps[1], steps[1]: steps[2]}
        target = following.get(OrderStatus(current))
        if target is None:
            raise DomainError("already completed")
        return orders.change_status(uow, rid, order_id, target).order.version

    versions = won(at_once(db, work))
    assert sorted(versions) == list(range(3, 3 + len(versions)))  # each change its own version, none lost
    with UnitOfWork(db) as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        assert order.version == 2 + len(versions)  # placed, paid, then each change
        assert order.refunded_cents == 100 * 5
        last = uow.session.exec(
            select(OutboxEvent.envelope)
            .where(OutboxEvent.type == "order_updated")
            .order_by(col(OutboxEvent.seq).desc())
        ).first()
        assert last is not None and last["data"]["order"]["version"] == order.version


def test_seq_is_gap_free_and_in_commit_order_under_concurrent_orders(db: Engine):
    """What the relay relies on: whenever a reader sees seq n committed, every seq below n is
    committed too (never a hole that fills later), and at the end they are 1..N, each once."""
    rid = restaurant(db)
    tea = item(db, rid, "Tea", None)
    holes: list[list[int]] = []
    done = threading.Event()

    def read_along() -> None:
        while not done.is_set():
            seen = seqs(db, rid)
            if seen != list(range(1, len(seen) + 1)):
                holes.append(seen)

    reader = threading.Thread(target=read_along)
    reader.start()
    try:
        at_once(db, lambda uow, _i: [orders.place_order(uow, rid, order_of(tea, 1)) for _ in range(3)])
    finally:
        done.set()
        reader.join(30)
    assert not holes, holes[:3]
    final = seqs(db, rid)
    assert final == list(range(1, len(final) + 1))
    assert len(seqs(db, rid, "new_order")) == 3 * THREADS
    with UnitOfWork(db) as uow:
        assert uow.session.get(Restaurant, rid).event_seq == len(final)  # type: ignore[union-attr]


def test_damage_reports_at_once_all_count(db: Engine):
    rid = restaurant(db)
    buns = item(db, rid, "Buns", 50)
    at_once(db, lambda uow, _i: inventory.mark_damaged(uow, rid, buns, 1, "dropped").damaged_quantity)
    with UnitOfWork(db) as uow:
        row = uow.session.get(MenuItem, buns)
        assert row is not None and (row.stock_quantity, row.damaged_quantity) == (50, THREADS)


def test_one_ticket_reported_failed_by_many_and_swept_at_once_tells_each_outcome_once(db: Engine):
    """Printers' `failed` reports for one ticket at once, and the sweeper finding it late: each
    outcome is recorded and told once."""
    rid = restaurant(db)
    wings = item(db, rid, "Wings", None)
    with UnitOfWork(db) as uow:
        order_id = orders.place_order(uow, rid, order_of(wings, 1)).order.id
        uow.commit()
    with UnitOfWork(db) as uow:
        ticket_id = uow.session.exec(select(Ticket.id).where(Ticket.order_id == order_id)).one()
    assert ticket_id is not None

    def work(uow: UnitOfWork, i: int) -> Any:
        if i == 0:
            return tickets.expire_unacknowledged(uow, 0, now=utcnow() + timedelta(seconds=1))
        tickets.record_failed(uow, tickets.get_ticket(uow, rid, ticket_id), "printer-1", "paper_out", "")
        return None

    at_once(db, work)
    with UnitOfWork(db) as uow:
        notes = list(uow.session.exec(select(Notification.kind).where(Notification.restaurant_id == rid)))
        state = uow.session.exec(select(Ticket.state).where(Ticket.id == ticket_id)).one()
    # the sweep may come first (late, then failed: both told) or find the ticket failed; never twice each
    assert state == "failed" and notes.count("ticket_failed") == 1, (notes, state)
    assert notes.count("ticket_unacknowledged") <= 1, notes


def test_one_device_revoked_by_many_at_once_emits_once(db: Engine):
    rid = restaurant(db)
    with UnitOfWork(db) as uow:
        uow.session.add(Device(id="printer-race", restaurant_id=rid, kind="printer", name="Printer"))
        uow.commit()
    at_once(db, lambda uow, _i: devices.revoke_device(uow, rid, "printer-race").revoked)
    assert len(seqs(db, rid, "device_updated")) == 1


def test_one_idempotency_key_sent_by_many_at_once_orders_once(db: Engine, tmp_path):
    """Through HTTP: the first request claims the key; the others wait on its unique row (or on
    SQLite's writer lock), then answer its stored response."""
    app = App(Settings(data_dir=tmp_path / "app"), db)
    rid = app.add_restaurant("Keys", "admin@keys.test")
    token = app.api_token("admin@keys.test", "admin", rid)
    lemonade = item(db, rid, "Lemonade", 30)
    barrier = threading.Barrier(THREADS)
    answers: list[tuple[int, int, str | None]] = []

    def post() -> None:
        client = app.http(token)
        barrier.wait(10)
        response = client.post(
            f"/restaurants/{rid}/orders",
            json={"items": [{"menu_item_id": lemonade, "quantity": 4}]},
            headers={"Idempotency-Key": "one-tap"},
        )
        answers.append((response.status_code, response.json()["id"], response.headers.get("idempotent-replayed")))

    running = [threading.Thread(target=post) for _ in range(THREADS)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(60)
    assert len(answers) == THREADS and {(code, order_id) for code, order_id, _ in answers} == {(201, answers[0][1])}
    assert sum(1 for *_, replayed in answers if replayed == "true") == THREADS - 1
    assert stock(db, lemonade) == 26 and len(seqs(db, rid, "new_order")) == 1


def test_two_tablets_bumping_one_order_at_once_both_get_an_ack_and_it_moves_once(db: Engine):
    """Two kitchen screens tap the same order: one moves it, the other finds it done (an ack, not
    a refusal), and the order's version moves once."""
    rid = restaurant(db)
    fish = item(db, rid, "Fish", None)
    with UnitOfWork(db) as uow:
        order_id = orders.place_order(uow, rid, order_of(fish, 1)).order.id
        for n in range(2):
            uow.session.add(Device(id=f"kds-{n}", restaurant_id=rid, kind="tablet", name=f"KDS {n}"))
        uow.commit()

    def bump(uow: UnitOfWork, i: int) -> Any:
        device = devices.get_device(uow, rid, f"kds-{i}")
        body = {"type": "bumped", "order_id": order_id, "to": "preparing", "request_id": f"tap-{i}"}
        return apply_tablet_event(uow, device, DeviceMessage(rid, device.id, "events", body))

    acks = at_once(db, bump, threads=2)
    assert all(isinstance(ack, dict) and ack["status"] == "preparing" for ack in acks), acks
    with UnitOfWork(db) as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None and (order.status, order.version) == ("preparing", 2)
    assert len(seqs(db, rid, "order_updated")) == 1


def test_orders_naming_the_same_items_in_opposite_orders_do_not_deadlock(db: Engine):
    """Half the orders list Cola then Chips, half Chips then Cola: locked in ascending id whatever
    the order of the lines, so no two transactions wait on each other (a deadlock would surface as
    a crash of one thread: PostgreSQL aborts it)."""
    rid = restaurant(db)
    cola, chips = item(db, rid, "Cola", 100), item(db, rid, "Chips", 100)

    def work(uow: UnitOfWork, i: int) -> Any:
        pair = [cola, chips] if i % 2 else [chips, cola]
        lines = [OrderItemIn(menu_item_id=item_id, quantity=1) for item_id in pair]
        return orders.place_order(uow, rid, OrderIn(items=lines)).order.id

    for _ in range(3):
        assert len(won(at_once(db, work))) == THREADS
    assert stock(db, cola) == stock(db, chips) == 100 - 3 * THREADS


def test_order_numbers_go_one_two_three_per_restaurant_without_gaps(db: Engine):
    """Two restaurants order at once, interleaved; some orders are refused (sold out). Each restaurant's
    numbers are 1..n with no gap or repeat (a refused order gives its number back), in the order the
    orders were placed (id order), and every new_order event carries its order's number."""
    first, second = restaurant(db), restaurant(db)
    scarce = {first: item(db, first, "Pie", stock=1), second: item(db, second, "Pie", stock=1)}
    plenty = {first: item(db, first, "Tea", stock=None), second: item(db, second, "Tea", stock=None)}

    def place(uow: UnitOfWork, i: int) -> int:
        rid = (first, second)[i % 2]
        wanted = scarce[rid] if i % 3 == 0 else plenty[rid]
        return orders.place_order(uow, rid, order_of(wanted, 1)).order.number

    results = at_once(db, place, threads=12)
    assert any(isinstance(result, DomainError) for result in results)  # the pie ran out somewhere
    with UnitOfWork(db) as uow:
        for rid in (first, second):
            rows = uow.session.exec(select(Order).where(Order.restaurant_id == rid).order_by(col(Order.id))).all()
            assert [row.number for row in rows] == list(range(1, len(rows) + 1))
            assert uow.session.get(Restaurant, rid).order_seq == len(rows)  # type: ignore[union-attr]
            events = uow.session.exec(
                select(OutboxEvent).where(OutboxEvent.restaurant_id == rid, OutboxEvent.type == "new_order")
            ).all()
            by_id = {
                event.envelope["data"]["order"]["id"]: event.envelope["data"]["order"]["number"] for event in events
            }
            assert by_id == {row.id: row.number for row in rows}
        answered = sorted(won(results))
        numbers = sorted(row.number for row in uow.session.exec(select(Order)).all())
    assert answered == numbers  # every accepted order was answered with its own number
