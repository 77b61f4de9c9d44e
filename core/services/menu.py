"""Categories, menus and menu items: create, update, delete, each with its event."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from core import domain, events
from core.commands import CategoryIn, CategoryUpdate, MenuIn, MenuItemIn, MenuItemUpdate, MenuUpdate
from core.domain import MovementKind, NotFound, Stock
from core.locking import locked
from core.models import Category, Menu, MenuItem, OrderItem
from core.paging import Page, Window, page
from core.services.inventory import apply_stock, get_item, record, stock_of
from core.unit_of_work import UnitOfWork

T = TypeVar("T", bound=Category | Menu)


def _owned(uow: UnitOfWork, model: type[T], restaurant_id: int, row_id: int, *, lock: bool = False) -> T:
    row = locked(uow.session, model, row_id) if lock else uow.session.get(model, row_id)
    if row is None or row.restaurant_id != restaurant_id:
        raise NotFound(f"{model.__name__.lower()} {row_id} not found")
    return row


def _emit_row(uow: UnitOfWork, action: events.RowAction, row: Category | Menu) -> None:
    event = events.category_changed(action, row) if isinstance(row, Category) else events.menu_changed(action, row)
    uow.emit(row.restaurant_id, event)


def list_rows(uow: UnitOfWork, model: type[T], restaurant_id: int, window: Window) -> Page[T]:
    query = select(model).where(model.restaurant_id == restaurant_id)
    return page(uow, query.order_by(col(model.id)), window)


def get_row(uow: UnitOfWork, model: type[T], restaurant_id: int, row_id: int) -> T:
    return _owned(uow, model, restaurant_id, row_id)


def create_row(uow: UnitOfWork, model: type[Category] | type[Menu], restaurant_id: int, data: CategoryIn | MenuIn):
    row = model(restaurant_id=restaurant_id, **data.model_dump())
    uow.session.add(row)
    uow.session.flush()
    _emit_row(uow, "created", row)
    return row


def update_row(
    uow: UnitOfWork,
    model: type[Category] | type[Menu],
    restaurant_id: int,
    row_id: int,
    data: CategoryUpdate | MenuUpdate,
):
    row = _owned(uow, model, restaurant_id, row_id, lock=True)
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(row, field, value)
    uow.session.add(row)
    _emit_row(uow, "updated", row)
    return row


def delete_row(uow: UnitOfWork, model: type[Category] | type[Menu], restaurant_id: int, row_id: int) -> None:
    row = _owned(uow, model, restaurant_id, row_id, lock=True)
    children = MenuItem.category_id if model is Category else MenuItem.menu_id
    if uow.session.exec(select(MenuItem.id).where(children == row_id)).first() is not None:
        raise domain.DomainError(f"{model.__name__.lower()} {row_id} still has menu items")
    _emit_row(uow, "deleted", row)
    uow.session.delete(row)


def _check_refs(uow: UnitOfWork, restaurant_id: int, fields: dict[str, Any]) -> None:
    if "menu_id" in fields:
        _owned(uow, Menu, restaurant_id, fields["menu_id"])
    if fields.get("category_id") is not None:
        _owned(uow, Category, restaurant_id, fields["category_id"])


def create_item(uow: UnitOfWork, restaurant_id: int, data: MenuItemIn, actor: str | None = None) -> MenuItem:
    """Its opening stock is the ledger's first line (`counted`, from nothing), tracked or not: turning
    tracking on later moves no figure, and the ledger still sums to the item's stock."""
    fields = data.model_dump()
    _check_refs(uow, restaurant_id, fields)
    item = MenuItem(restaurant_id=restaurant_id, **fields)
    uow.session.add(item)
    uow.session.flush()
    uow.emit(restaurant_id, events.menu_item_changed("created", item))
    nothing = Stock(0, 0, item.low_stock_threshold)
    if item.enable_stock_tracking:
        apply_stock(uow, item, stock_of(item), "created", kind=MovementKind.COUNTED, actor=actor, before=nothing)
    else:
        record(uow, item, MovementKind.COUNTED, nothing, stock_of(item), "created", actor, None)
    return item


def update_item(uow: UnitOfWork, restaurant_id: int, item_id: int, data: MenuItemUpdate) -> MenuItem:
    """Locked: an update may re-apply the stock figures (tracking turned on or off), which an order
    changing them at the same time must not be lost under."""
    item = get_item(uow, restaurant_id, item_id, lock=True)
    fields = data.model_dump(exclude_unset=True)
    _check_refs(uow, restaurant_id, fields)
    for field, value in fields.items():
        setattr(item, field, value)
    uow.session.add(item)
    uow.emit(restaurant_id, events.menu_item_changed("updated", item))
    if "enable_stock_tracking" in fields:
        apply_stock(uow, item, stock_of(item), "tracking changed", kind=MovementKind.ADJUSTED)  # no figure moves
    return item


def delete_item(uow: UnitOfWork, restaurant_id: int, item_id: int) -> None:
    item = get_item(uow, restaurant_id, item_id, lock=True)
    if uow.session.exec(select(OrderItem.id).where(OrderItem.menu_item_id == item_id)).first() is not None:
        raise domain.DomainError(f"menu item {item_id} is on orders; mark it unavailable instead")
    uow.emit(restaurant_id, events.menu_item_changed("deleted", item))
    uow.session.delete(item)
    try:
        uow.session.flush()
    except IntegrityError as exc:
        raise domain.DomainError(f"menu item {item_id} is still referenced") from exc
