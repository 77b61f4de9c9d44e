"""Editing a placed order: add lines, remove or reduce lines, change a line's modifiers and notes, the order's notes.

Only an open order (pending, preparing, ready) is edited. The edit is decided whole before anything
is written: the rules (`core.rules.order_changes`) give the lines after, the stock each item moves
and each station's chits; an item short, a line the order lacks or a closed order refuses it all.
Then, in the order of `core.locking` (the order row, the menu items ascending, the restaurant row
last through the first emit): the lines, the total and one version bump, one `order_updated`
(`change: "items"`), a VOID and/or ADD chit per station touched, and the stock through `apply_stock`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from core import domain, events, sizes
from core.commands import OrderEditIn
from core.domain import DomainError, MovementKind, NotFound
from core.locking import locked_all
from core.models import MenuItem, OrderItem
from core.rules import order_changes
from core.rules.order_changes import Change, Line, Removal
from core.services import restaurants, tickets
from core.services.inventory import apply_stock, stock_of
from core.services.orders import OrderView, check_available, get_order, stations_of, touch, view_of
from core.unit_of_work import UnitOfWork


def edit_order(
    uow: UnitOfWork,
    restaurant_id: int,
    order_id: int,
    data: OrderEditIn,
    now: datetime | None = None,
    *,
    actor: str | None = None,
) -> OrderView:
    """`now`: read on the restaurant's clock for added items' `available_days`, as `orders.place_order`
    does; `actor`: who edited, for the stock ledger."""
    today = restaurants.local_today(uow, restaurant_id, now)
    order = get_order(uow, restaurant_id, order_id, lock=True)
    if not domain.is_open(order.status):
        raise DomainError(f"order {order_id} is {order.status}; only open orders are edited")
    if order.paid_at is not None:  # its refunds name its lines and amounts: a paid bill is refunded, not edited
        raise DomainError(f"order {order_id} is paid; refund it instead of editing it")
    rows = view_of(uow, order).lines
    before = [_line(row) for row in rows]

    # every item the edit may move stock of: the order's own and the added ones, locked ascending
    items = locked_all(
        uow.session, MenuItem, [line.menu_item_id for line in before] + [a.menu_item_id for a in data.add]
    )
    for wanted in sorted({a.menu_item_id for a in data.add}):
        item = items.get(wanted)
        if item is None or item.restaurant_id != restaurant_id:
            raise NotFound(f"menu item {wanted} not found")
        check_available(item, today)
    stations = stations_of(uow, [items[a.menu_item_id] for a in data.add])
    added = [
        Line(
            id=None,
            menu_item_id=a.menu_item_id,
            name=items[a.menu_item_id].name,
            quantity=a.quantity,
            unit_price_cents=items[a.menu_item_id].price_cents,
            modifiers=tuple(a.modifiers),
            notes=a.notes,
            course=a.course,
            station=stations.get(items[a.menu_item_id].category_id),
        )
        for a in data.add
    ]
    after = order_changes.edited_lines(
        before,
        [Removal(r.line_id, r.quantity) for r in data.remove],
        [Change(c.line_id, None if c.modifiers is None else tuple(c.modifiers), c.notes) for c in data.change],
        added,
    )
    gone, came = order_changes.changed_lines(before, after)
    notes_change = data.notes is not None and data.notes != order.notes
    if not gone and not came and not notes_change:
        raise DomainError("the edit changes nothing")
    if len(after) + len(gone) > sizes.MAX_ORDER_LINES:  # the event carries both: one MQTT packet at most
        raise DomainError(f"an order keeps at most {sizes.MAX_ORDER_LINES} lines with the ones an edit changes")
    stock_after: dict[int, domain.Stock] = {}
    for item_id, delta in order_changes.stock_moves(before, after).items():
        item = items.get(item_id)
        if item is not None and item.enable_stock_tracking:  # decided for every item before anything is written
            stock = stock_of(item)
            stock_after[item_id] = (
                domain.take(stock, delta, item.name) if delta > 0 else domain.adjust(stock, -delta, item.name)
            )

    # decided: write
    by_id = {row.id: row for row in rows}
    kept = {line.id for line in after if line.id is not None}
    for row in rows:
        if row.id not in kept:
            uow.session.delete(row)
    for line in after:
        if line.id is None:
            uow.session.add(_row(order_id, line))
            continue
        row = by_id[line.id]
        row.quantity, row.modifiers, row.notes = line.quantity, list(line.modifiers), line.notes
        uow.session.add(row)
    if data.notes is not None:
        order.notes = data.notes
    order.total_cents = order_changes.total_cents(after)
    touch(order)
    uow.session.add(order)
    uow.session.flush()
    result = view_of(uow, order)
    after = _with_new_ids(after, [row for row in result.lines if row.id not in by_id])
    gone, came = order_changes.changed_lines(before, after)
    edit = (_snapshots(gone, order_id), _snapshots(came, order_id))
    uow.emit(restaurant_id, events.order_updated(order, result.lines, "items", edit=edit))
    for station, chit in order_changes.chits(before, after).items():
        tickets.cut_chits(uow, order, station, _snapshots(chit.added, order_id), _snapshots(chit.voided, order_id))
    for item_id, stock in stock_after.items():
        item = items[item_id]
        kind = MovementKind.SOLD if stock.stock_quantity < item.stock_quantity else MovementKind.RETURNED
        apply_stock(uow, item, stock, f"order {order_id} edited", kind=kind, actor=actor, order_id=order_id)
    return result


def _line(row: OrderItem) -> Line:
    assert row.id is not None
    return Line(
        id=row.id,
        menu_item_id=row.menu_item_id,
        name=row.name,
        quantity=row.quantity,
        unit_price_cents=row.unit_price_cents,
        modifiers=tuple(row.modifiers),
        notes=row.notes,
        course=row.course,
        station=row.station,
    )


def _row(order_id: int, line: Line) -> OrderItem:
    return OrderItem(
        id=line.id,
        order_id=order_id,
        menu_item_id=line.menu_item_id,
        name=line.name,
        quantity=line.quantity,
        unit_price_cents=line.unit_price_cents,
        modifiers=list(line.modifiers),
        notes=line.notes,
        course=line.course,
        station=line.station,
    )


def _with_new_ids(after: list[Line], new_rows: list[OrderItem]) -> list[Line]:
    """The lines after, the added ones with the ids the flush gave them (in the order they were added)."""
    ids = iter(row.id for row in new_rows)
    return [line if line.id is not None else replace(line, id=next(ids)) for line in after]


def _snapshots(lines: list[Line], order_id: int) -> list[OrderItem]:
    """Lines as detached rows, for the event and the tickets (never added to the session)."""
    return [_row(order_id, line) for line in lines]
