"""Order use cases: place, move along. Stock is taken in the same transaction (refunds: `core.services.refunds`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import case, or_
from sqlmodel import col, select, update

from core import clock, domain, events
from core.commands import OrderIn
from core.domain import MovementKind, NotFound, OrderStatus
from core.locking import locked, locked_all
from core.models import Category, MenuItem, Order, OrderItem, Restaurant, utcnow
from core.services import tickets
from core.services.inventory import apply_stock, stock_of
from core.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class OrderView:
    """An order with its lines, as the use cases return it."""

    order: Order
    lines: list[OrderItem]


def view_of(uow: UnitOfWork, order: Order) -> OrderView:
    lines = uow.session.exec(select(OrderItem).where(OrderItem.order_id == order.id).order_by(col(OrderItem.id)))
    return OrderView(order, list(lines))


def get_order(uow: UnitOfWork, restaurant_id: int, order_id: int, *, lock: bool = False) -> Order:
    """`lock`: for a use case that changes the order (its status, version, refunds): see `core.locking`."""
    order = locked(uow.session, Order, order_id) if lock else uow.session.get(Order, order_id)
    if order is None or order.restaurant_id != restaurant_id:
        raise NotFound(f"order {order_id} not found")
    return order


def place_order(
    uow: UnitOfWork, restaurant_id: int, data: OrderIn, now: datetime | None = None, *, actor: str | None = None
) -> OrderView:
    """Create an order and take its stock; one item short refuses the whole order. `actor`: who placed
    it, for the stock ledger (`core.models.StockMovement`).

    `now` (the current instant unless a test drives time) is read on the restaurant's clock
    (`core.clock`): `available_days` against its local calendar date (a Sunday item is sold while the
    wall clock says Sunday, even at 01:30 when the business day is still Saturday's), the order's
    number and business date against its business day.

    Its menu items are locked (ascending id) before anything is decided or emitted: two orders for the
    last burger take turns, and the second sees the stock the first left."""
    now = now or utcnow()
    restaurant = uow.session.get(Restaurant, restaurant_id)  # its clock; `next_number` locks the row, last
    if restaurant is None:
        raise NotFound(f"restaurant {restaurant_id} not found")
    if restaurant.archived_at is not None:  # closed (core.services.archive): a super_admin's token still reaches it
        raise domain.DomainError(f"restaurant {restaurant_id} is archived; it takes no orders")
    local_day = clock.local_date(now, restaurant.timezone)
    business_day = clock.business_date(now, restaurant.timezone, restaurant.day_starts_at)
    wanted: dict[int, int] = {}
    for line in data.items:
        wanted[line.menu_item_id] = wanted.get(line.menu_item_id, 0) + line.quantity
    found = locked_all(uow.session, MenuItem, wanted)
    items: dict[int, MenuItem] = {}
    for item_id, quantity in sorted(wanted.items()):
        item = found.get(item_id)
        if item is None or item.restaurant_id != restaurant_id:
            raise NotFound(f"menu item {item_id} not found")
        check_available(item, local_day)
        if item.enable_stock_tracking:
            domain.take(stock_of(item), quantity, item.name)  # refuse before anything is written
        items[item_id] = item

    number, business_day = next_number(uow, restaurant_id, business_day)
    order = Order(
        restaurant_id=restaurant_id,
        number=number,
        business_date=business_day,
        table_name=data.table_name,
        pickup_name=data.pickup_name,
        server_name=data.server_name,
        notes=data.notes,
        total_cents=sum(items[line.menu_item_id].price_cents * line.quantity for line in data.items),
        created_at=now,
        updated_at=now,
    )
    uow.session.add(order)
    uow.session.flush()
    assert order.id is not None  # the flush gave it one
    stations = stations_of(uow, items.values())
    for line in data.items:
        item = items[line.menu_item_id]
        uow.session.add(
            OrderItem(
                order_id=order.id,
                menu_item_id=line.menu_item_id,
                name=item.name,
                quantity=line.quantity,
                unit_price_cents=item.price_cents,
                modifiers=line.modifiers,
                notes=line.notes,
                course=line.course,
                station=stations.get(item.category_id),
            )
        )
    uow.session.flush()
    result = view_of(uow, order)
    uow.emit(restaurant_id, events.new_order(order, result.lines))
    tickets.cut(uow, order, "new")
    for item_id, quantity in wanted.items():
        item = items[item_id]
        if item.enable_stock_tracking:
            after = domain.take(stock_of(item), quantity, item.name)
            apply_stock(uow, item, after, f"order {order.id}", kind=MovementKind.SOLD, actor=actor, order_id=order.id)
    return result


def check_available(item: MenuItem, local_day: date) -> None:
    """409 for an item switched off, and another message for one not sold on this weekday."""
    state = clock.availability(item.available, item.available_days, local_day)
    if state == "off":
        raise domain.DomainError(f"{item.name} is not available")
    if state == "not_today":
        raise domain.DomainError(f"{item.name} is not available today ({local_day:%A}, the restaurant's local date)")


def next_number(uow: UnitOfWork, restaurant_id: int, day: date) -> tuple[int, date]:
    """The restaurant's next order number on business day `day` (1, 2, 3…, from 1 again each day), and
    the day it counts in.

    Gap-free: the `UPDATE … RETURNING` takes the restaurant row that `UnitOfWork.emit` takes for seq, so
    it is the last lock of `core.locking` (the menu items are locked before), and a refused order rolls
    its number back with it. A business day never goes back: if `day` is before the day counted in (the
    zone was moved west, or a zone's clock went back across midnight), the order counts on in that later
    day, so no number is given twice on one day."""
    restarts = or_(col(Restaurant.order_day).is_(None), col(Restaurant.order_day) < day)
    row = uow.session.execute(
        update(Restaurant)
        .where(col(Restaurant.id) == restaurant_id)
        .values(
            order_seq=case((restarts, 1), else_=col(Restaurant.order_seq) + 1),
            order_day=case((restarts, day), else_=col(Restaurant.order_day)),
        )
        .returning(col(Restaurant.order_seq), col(Restaurant.order_day))
    ).one()
    return row[0], row[1]


def stations_of(uow: UnitOfWork, items: Iterable[MenuItem]) -> dict[int | None, str | None]:
    """The kitchen station of each item's category (None: the default station): placing and editing route by it."""
    category_ids = {item.category_id for item in items if item.category_id is not None}
    if not category_ids:
        return {}
    rows = uow.session.exec(select(Category).where(col(Category.id).in_(category_ids)))
    return {row.id: row.station for row in rows}


def change_status(
    uow: UnitOfWork, restaurant_id: int, order_id: int, status: OrderStatus, *, actor: str | None = None
) -> OrderView:
    """`actor`: who moved it, for the stock ledger's lines of a cancel's restock."""
    order = get_order(uow, restaurant_id, order_id, lock=True)
    return _move(uow, order, domain.check_transition(order.status, status), "status", actor)


def recall(uow: UnitOfWork, restaurant_id: int, order_id: int) -> OrderView:
    """A kitchen screen takes back its last bump: the order goes one step back."""
    order = get_order(uow, restaurant_id, order_id, lock=True)
    return _move(uow, order, domain.check_recall(order.status), "recall", None)


def _move(uow: UnitOfWork, order: Order, target: OrderStatus, change: str, actor: str | None) -> OrderView:
    restaurant_id = order.restaurant_id
    order.status = target
    touch(order)
    uow.session.add(order)
    if target == OrderStatus.CANCELLED:
        _restock(uow, order, actor)
    result = view_of(uow, order)
    uow.emit(restaurant_id, events.order_updated(order, result.lines, change))
    if target == OrderStatus.CANCELLED:
        tickets.cut(uow, order, "void")
    return result


def _restock(uow: UnitOfWork, order: Order, actor: str | None) -> None:
    """A cancelled order gives back the stock it took. Every item is locked before the first
    `apply_stock` emits (which takes the restaurant row): the order of `core.locking`."""
    lines = list(uow.session.exec(select(OrderItem).where(OrderItem.order_id == order.id)))
    items = locked_all(uow.session, MenuItem, (line.menu_item_id for line in lines))
    for line in lines:
        item = items.get(line.menu_item_id)
        if item is not None and item.enable_stock_tracking:
            restocked = domain.adjust(stock_of(item), line.quantity, item.name)
            reason = f"order {order.id} cancelled"
            apply_stock(uow, item, restocked, reason, kind=MovementKind.RETURNED, actor=actor, order_id=order.id)


def touch(order: Order) -> None:
    """Every change of an order bumps its version (tickets and caches key on it) and its `updated_at`."""
    order.version += 1
    order.updated_at = utcnow()


def reprint(uow: UnitOfWork, restaurant_id: int, order_id: int) -> OrderView:
    """Print the order's tickets again, marked REPRINT (locked: a cancel at the same time goes first or after)."""
    order = get_order(uow, restaurant_id, order_id, lock=True)
    tickets.reprint(uow, order)
    return view_of(uow, order)
