"""Refunds, each a record of its own (amount, reason, who, when, lines), and marking an order paid.

The order row is locked first (`core.locking`): two refunds at once take turns, and the second
sees what the first refunded, so together they never exceed the total. The order's
`refunded_cents` is kept as the sum of its refunds' amounts, in the same transaction.
What "paid" means, and which refunds are allowed, is `core.rules.payments`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select

from core import events
from core.models import Refund, User, utcnow
from core.paging import Page, Window, page
from core.rules import payments
from core.rules.payments import LineRefund, OrderedLine
from core.services.orders import OrderView, get_order, touch, view_of
from core.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Refunder:
    """Who asks for a refund, from their token: its `sub`, and the user id of a login's token."""

    sub: str
    user_id: int | None = None


@dataclass(frozen=True)
class Refunded:
    view: OrderView
    refund: Refund


def refund(
    uow: UnitOfWork,
    restaurant_id: int,
    order_id: int,
    *,
    amount_cents: int | None,
    reason: str,
    lines: list[LineRefund],
    by: Refunder,
) -> Refunded:
    """Refund part or all of a paid order: an amount, order lines, or both (`payments.refund_amount`)."""
    order = get_order(uow, restaurant_id, order_id, lock=True)
    view = view_of(uow, order)
    lines_value = None
    if lines:
        ordered = {
            line.id: OrderedLine(line.id, line.quantity, line.unit_price_cents) for line in view.lines if line.id
        }
        lines_value = payments.check_lines(ordered, _refunded_lines(uow, order_id), lines)
    amount = payments.refund_amount(order.paid_at, order.total_cents, order.refunded_cents, amount_cents, lines_value)
    user = uow.session.get(User, by.user_id) if by.user_id is not None else None
    record = Refund(
        order_id=order_id,
        amount_cents=amount,
        reason=reason,
        by_sub=by.sub,
        by_user_id=by.user_id,
        by_email=user.email if user is not None else None,
        lines=[{"order_item_id": line.order_item_id, "quantity": line.quantity} for line in _merged(lines)],
    )
    order.refunded_cents += amount
    touch(order)
    uow.session.add(order)
    uow.session.add(record)
    uow.session.flush()
    uow.emit(restaurant_id, events.order_updated(order, view.lines, "refund", refund=record))
    return Refunded(view, record)


def pay(uow: UnitOfWork, restaurant_id: int, order_id: int) -> OrderView:
    """Stamp the order paid (once; not a cancelled one): what makes it refundable."""
    order = get_order(uow, restaurant_id, order_id, lock=True)
    payments.check_payable(order.status, order.paid_at)
    order.paid_at = utcnow()
    touch(order)
    uow.session.add(order)
    view = view_of(uow, order)
    uow.emit(restaurant_id, events.order_updated(order, view.lines, "paid"))
    return view


def list_refunds(uow: UnitOfWork, restaurant_id: int, order_id: int, window: Window) -> Page[Refund]:
    """The order's refunds, oldest first (the order's history reads top down)."""
    get_order(uow, restaurant_id, order_id)
    query = select(Refund).where(Refund.order_id == order_id).order_by(col(Refund.id))
    return page(uow, query, window)


def _refunded_lines(uow: UnitOfWork, order_id: int) -> dict[int, int]:
    rows = uow.session.exec(select(Refund.lines).where(Refund.order_id == order_id))
    return payments.already_refunded(
        [LineRefund(int(line["order_item_id"]), int(line["quantity"])) for line in lines] for lines in rows
    )


def _merged(lines: list[LineRefund]) -> list[LineRefund]:
    """One entry per order line, in line order (a line named twice is added up)."""
    units: dict[int, int] = {}
    for line in lines:
        units[line.order_item_id] = units.get(line.order_item_id, 0) + line.quantity
    return [LineRefund(line_id, quantity) for line_id, quantity in sorted(units.items())]
