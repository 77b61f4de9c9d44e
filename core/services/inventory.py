"""Stock use cases. Every stock change goes through `apply_stock`, so alerts fire in one place."""

from __future__ import annotations

from sqlmodel import col, select

from core import domain
from core.domain import NotFound, Stock
from core.models import MenuItem, Notification
from core.schemas import MenuItemOut, NotificationOut
from core.unit_of_work import UnitOfWork


def item_out(item: MenuItem) -> MenuItemOut:
    return MenuItemOut(**item.model_dump(), available_quantity=stock_of(item).available)


def stock_of(item: MenuItem) -> Stock:
    return Stock(item.stock_quantity, item.damaged_quantity, item.low_stock_threshold)


def get_item(uow: UnitOfWork, restaurant_id: int, item_id: int) -> MenuItem:
    item = uow.session.get(MenuItem, item_id)
    if item is None or item.restaurant_id != restaurant_id:
        raise NotFound(f"menu item {item_id} not found")
    return item


def apply_stock(uow: UnitOfWork, item: MenuItem, after: Stock, reason: str) -> None:
    """Store new stock figures and emit `inventory_updated`, plus `low_stock` when the alarm fires."""
    alarm = domain.low_stock_alarm(after, item.low_stock_alerted, item.low_stock_clear_level)
    item.low_stock_alerted = alarm.alerted and item.enable_stock_tracking
    item.stock_quantity = after.stock_quantity
    item.damaged_quantity = after.damaged_quantity
    item.low_stock_threshold = after.low_stock_threshold
    uow.session.add(item)
    state = item_out(item).model_dump(mode="json")
    uow.emit(item.restaurant_id, "inventory_updated", {"item": state, "reason": reason})
    if item.enable_stock_tracking and alarm.fire:
        uow.emit(
            item.restaurant_id,
            "low_stock",
            {
                "item": state,
                "available_quantity": after.available,
                "low_stock_threshold": after.low_stock_threshold,
            },
        )
        notify(
            uow,
            item.restaurant_id,
            kind="low_stock",
            title=f"Low stock: {item.name}",
            body=f"{after.available} left (threshold {after.low_stock_threshold})",
        )


def notify(uow: UnitOfWork, restaurant_id: int, *, kind: str, title: str, body: str = "") -> None:
    note = Notification(restaurant_id=restaurant_id, kind=kind, title=title, body=body)
    uow.session.add(note)
    uow.session.flush()
    payload = NotificationOut.model_validate(note, from_attributes=True).model_dump(mode="json")
    uow.emit(restaurant_id, "notification", {"notification": payload})


def _tracked(uow: UnitOfWork, restaurant_id: int, item_id: int) -> MenuItem:
    item = get_item(uow, restaurant_id, item_id)
    if not item.enable_stock_tracking:
        raise domain.DomainError(f"stock tracking is off for {item.name}")
    return item


def adjust_stock(uow: UnitOfWork, restaurant_id: int, item_id: int, delta: int, reason: str) -> MenuItemOut:
    item = _tracked(uow, restaurant_id, item_id)
    apply_stock(uow, item, domain.adjust(stock_of(item), delta, item.name), reason or "adjusted")
    uow.commit()
    return item_out(item)


def count_stock(uow: UnitOfWork, restaurant_id: int, item_id: int, counted: int, reason: str) -> MenuItemOut:
    """A physical count (a scale): `stock_quantity` becomes what was counted."""
    item = _tracked(uow, restaurant_id, item_id)
    if counted != item.stock_quantity:
        apply_stock(uow, item, domain.adjust(stock_of(item), counted - item.stock_quantity, item.name), reason)
    uow.commit()
    return item_out(item)


def mark_damaged(uow: UnitOfWork, restaurant_id: int, item_id: int, quantity: int, reason: str) -> MenuItemOut:
    item = _tracked(uow, restaurant_id, item_id)
    apply_stock(uow, item, domain.mark_damaged(stock_of(item), quantity, item.name), reason or "damaged")
    uow.commit()
    return item_out(item)


def set_threshold(uow: UnitOfWork, restaurant_id: int, item_id: int, threshold: int | None) -> MenuItemOut:
    item = _tracked(uow, restaurant_id, item_id)
    current = stock_of(item)
    apply_stock(uow, item, Stock(current.stock_quantity, current.damaged_quantity, threshold), "threshold")
    uow.commit()
    return item_out(item)


def list_items(uow: UnitOfWork, restaurant_id: int, tracked_only: bool = False) -> list[MenuItemOut]:
    query = select(MenuItem).where(MenuItem.restaurant_id == restaurant_id)
    if tracked_only:
        query = query.where(MenuItem.enable_stock_tracking == True)  # noqa: E712
    return [item_out(item) for item in uow.session.exec(query.order_by(col(MenuItem.id)))]
