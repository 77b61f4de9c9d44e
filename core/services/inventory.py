"""Stock use cases. Every stock change goes through `apply_stock`, so alerts fire in one place."""

from __future__ import annotations

from sqlmodel import col, select

from core import domain, events
from core.domain import NotFound, Stock
from core.locking import locked
from core.models import MenuItem
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


def apply_stock(uow: UnitOfWork, item: MenuItem, after: Stock, reason: str) -> None:
    """Store new stock figures and emit `inventory_updated`, plus `low_stock` when the alarm fires.

    The caller read `item` locked (`get_item(..., lock=True)`, `core.locking`) and has locked every
    other item it changes: the emit here takes the restaurant row, which comes last."""
    alarm = domain.low_stock_alarm(after, item.low_stock_alerted, item.low_stock_clear_level)
    item.low_stock_alerted = alarm.alerted and item.enable_stock_tracking
    item.stock_quantity = after.stock_quantity
    item.damaged_quantity = after.damaged_quantity
    item.low_stock_threshold = after.low_stock_threshold
    uow.session.add(item)
    uow.emit(item.restaurant_id, events.inventory_updated(item, reason))
    if item.enable_stock_tracking and alarm.fire:
        uow.emit(item.restaurant_id, events.low_stock(item, after))
        notify(
            uow,
            item.restaurant_id,
            kind="low_stock",
            title=f"Low stock: {item.name}",
            body=f"{after.available} left (threshold {after.low_stock_threshold})",
        )


def _tracked(uow: UnitOfWork, restaurant_id: int, item_id: int) -> MenuItem:
    """The item, locked: every caller changes its stock from what it reads here."""
    item = get_item(uow, restaurant_id, item_id, lock=True)
    if not item.enable_stock_tracking:
        raise domain.DomainError(f"stock tracking is off for {item.name}")
    return item


def adjust_stock(uow: UnitOfWork, restaurant_id: int, item_id: int, delta: int, reason: str) -> MenuItem:
    item = _tracked(uow, restaurant_id, item_id)
    apply_stock(uow, item, domain.adjust(stock_of(item), delta, item.name), reason or "adjusted")
    return item


def count_stock(uow: UnitOfWork, restaurant_id: int, item_id: int, counted: int, reason: str) -> MenuItem:
    """A physical count (a scale): `stock_quantity` becomes what was counted."""
    item = _tracked(uow, restaurant_id, item_id)
    if counted != item.stock_quantity:
        apply_stock(uow, item, domain.adjust(stock_of(item), counted - item.stock_quantity, item.name), reason)
    return item


def mark_damaged(uow: UnitOfWork, restaurant_id: int, item_id: int, quantity: int, reason: str) -> MenuItem:
    item = _tracked(uow, restaurant_id, item_id)
    apply_stock(uow, item, domain.mark_damaged(stock_of(item), quantity, item.name), reason or "damaged")
    return item


def set_threshold(uow: UnitOfWork, restaurant_id: int, item_id: int, threshold: int | None) -> MenuItem:
    item = _tracked(uow, restaurant_id, item_id)
    current = stock_of(item)
    apply_stock(uow, item, Stock(current.stock_quantity, current.damaged_quantity, threshold), "threshold")
    return item


def list_items(uow: UnitOfWork, restaurant_id: int, window: Window, tracked_only: bool = False) -> Page[MenuItem]:
    query = select(MenuItem).where(MenuItem.restaurant_id == restaurant_id)
    if tracked_only:
        query = query.where(MenuItem.enable_stock_tracking == True)  # noqa: E712
    return page(uow, query.order_by(col(MenuItem.id)), window)
