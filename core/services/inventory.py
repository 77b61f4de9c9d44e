"""Stock use cases. Every stock change goes through `apply_stock`, so alerts fire in one place."""

from __future__ import annotations

from sqlmodel import col, select

from core import domain, events
from core.domain import MovementKind, NotFound, Stock
from core.locking import locked
from core.models import MenuItem, StockMovement
from core.paging import Page, Window, page
from core.services.notifications import notify
from core.unit_of_work import UnitOfWork


def stock_of(item: MenuItem) -> Stock:
    return Stock(item.stock_quantity, item.damaged_quantity, item.low_stock_threshold)


def get_item(uow: UnitOfWork, restaurant_id: int, item_id: int, *, lock: bool = False) -> MenuItem:
    """`lock`: for a use case that changes the item (its stock above all): see `core.locking`."""
    item = locked(uow.session, MenuItem, item_id) if lock else uow.session.get(MenuItem, item_id)
    if item is None or item.restaurant_id != restaurant_id:
        raise NotFound(f"menu item {item_id} not found")
    return item


def apply_stock(
    uow: UnitOfWork,
    item: MenuItem,
    after: Stock,
    reason: str,
    *,
    kind: MovementKind,
    actor: str | None = None,
    order_id: int | None = None,
    before: Stock | None = None,
) -> None:
    """Store new stock figures, write their ledger line, and emit `inventory_updated`, plus `low_stock`
    when the alarm fires.

    `kind` says why stock moved (the caller knows; the reason is free text); `before` is the item's
    figures unless said otherwise (a new item starts from nothing). The caller read `item` locked
    (`get_item(..., lock=True)`, `core.locking`) and has locked every other item it changes: the
    emit here takes the restaurant row, which comes last."""
    record(uow, item, kind, stock_of(item) if before is None else before, after, reason, actor, order_id)
    alarm = domain.low_stock_alarm(after, item.low_stock_alerted, item.low_stock_clear_level)
    item.low_stock_alerted = alarm.alerted and item.enable_stock_tracking
    item.stock_quantity = after.stock_quantity
    item.damaged_quantity = after.damaged_quantity
    item.low_stock_threshold = after.low_stock_threshold
    uow.session.add(item)
    uow.emit(item.restaurant_id, events.inventory_updated(item, reason, kind))
    if item.enable_stock_tracking and alarm.fire:
        uow.emit(item.restaurant_id, events.low_stock(item, after))
        notify(
            uow,
            item.restaurant_id,
            kind="low_stock",
            title=f"Low stock: {item.name}",
            body=f"{after.available} left (threshold {after.low_stock_threshold})",
        )


def record(
    uow: UnitOfWork,
    item: MenuItem,
    kind: MovementKind,
    before: Stock,
    after: Stock,
    reason: str,
    actor: str | None,
    order_id: int | None,
) -> None:
    """The ledger line of a change, if a figure moved. Only `apply_stock` and a new untracked item
    (whose opening stock has no event) call it."""
    line = domain.movement(kind, before, after)
    if line is None:
        return
    assert item.id is not None  # flushed by whoever made it
    uow.session.add(
        StockMovement(
            restaurant_id=item.restaurant_id,
            item_id=item.id,
            kind=line.kind,
            stock_delta=line.stock_delta,
            damaged_delta=line.damaged_delta,
            stock_after=line.stock_after,
            damaged_after=line.damaged_after,
            reason=reason,
            actor=actor,
            order_id=order_id,
        )
    )


def _tracked(uow: UnitOfWork, restaurant_id: int, item_id: int) -> MenuItem:
    """The item, locked: every caller changes its stock from what it reads here."""
    item = get_item(uow, restaurant_id, item_id, lock=True)
    if not item.enable_stock_tracking:
        raise domain.DomainError(f"stock tracking is off for {item.name}")
    return item


def adjust_stock(
    uow: UnitOfWork, restaurant_id: int, item_id: int, delta: int, reason: str, actor: str | None = None
) -> MenuItem:
    item = _tracked(uow, restaurant_id, item_id)
    after = domain.adjust(stock_of(item), delta, item.name)
    apply_stock(uow, item, after, reason or "adjusted", kind=MovementKind.ADJUSTED, actor=actor)
    return item


def count_stock(
    uow: UnitOfWork, restaurant_id: int, item_id: int, counted: int, reason: str, actor: str | None = None
) -> MenuItem:
    """A physical count (a scale): `stock_quantity` becomes what was counted."""
    item = _tracked(uow, restaurant_id, item_id)
    if counted != item.stock_quantity:
        after = domain.adjust(stock_of(item), counted - item.stock_quantity, item.name)
        apply_stock(uow, item, after, reason, kind=MovementKind.COUNTED, actor=actor)
    return item


def receive(
    uow: UnitOfWork, restaurant_id: int, item_id: int, quantity: int, reason: str, actor: str | None = None
) -> MenuItem:
    """A delivery: units come into stock (the ledger's `received`, apart from a counted correction)."""
    item = _tracked(uow, restaurant_id, item_id)
    after = domain.adjust(stock_of(item), quantity, item.name)
    apply_stock(uow, item, after, reason or "received", kind=MovementKind.RECEIVED, actor=actor)
    return item


def mark_damaged(
    uow: UnitOfWork, restaurant_id: int, item_id: int, quantity: int, reason: str, actor: str | None = None
) -> MenuItem:
    item = _tracked(uow, restaurant_id, item_id)
    after = domain.mark_damaged(stock_of(item), quantity, item.name)
    apply_stock(uow, item, after, reason or "damaged", kind=MovementKind.DAMAGED, actor=actor)
    return item


def write_off(
    uow: UnitOfWork, restaurant_id: int, item_id: int, quantity: int, reason: str, actor: str | None = None
) -> MenuItem:
    """Damaged units leave the stock for good (binned, returned to the supplier)."""
    item = _tracked(uow, restaurant_id, item_id)
    after = domain.write_off(stock_of(item), quantity, item.name)
    apply_stock(uow, item, after, reason or "written off", kind=MovementKind.WRITTEN_OFF, actor=actor)
    return item


def set_threshold(uow: UnitOfWork, restaurant_id: int, item_id: int, threshold: int | None) -> MenuItem:
    """No ledger line: neither figure moves."""
    item = _tracked(uow, restaurant_id, item_id)
    current = stock_of(item)
    after = Stock(current.stock_quantity, current.damaged_quantity, threshold)
    apply_stock(uow, item, after, "threshold", kind=MovementKind.ADJUSTED)
    return item


def movements(
    uow: UnitOfWork, restaurant_id: int, item_id: int, window: Window, kind: MovementKind | None = None
) -> Page[StockMovement]:
    """The item's ledger, newest first: where its stock went, who moved it, and why."""
    get_item(uow, restaurant_id, item_id)
    query = select(StockMovement).where(StockMovement.restaurant_id == restaurant_id, StockMovement.item_id == item_id)
    if kind is not None:
        query = query.where(StockMovement.kind == kind)
    return page(uow, query.order_by(col(StockMovement.id).desc()), window)


def list_items(uow: UnitOfWork, restaurant_id: int, window: Window, tracked_only: bool = False) -> Page[MenuItem]:
    query = select(MenuItem).where(MenuItem.restaurant_id == restaurant_id)
    if tracked_only:
        query = query.where(MenuItem.enable_stock_tracking == True)  # noqa: E712
    return page(uow, query.order_by(col(MenuItem.id)), window)
