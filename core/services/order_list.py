"""The orders list of a back office, and the day's totals: read-only use cases over a restaurant's orders.

Dates here are the restaurant's business dates (`core.clock.business_date`): each order stores the one
it was placed in, so "the orders of Tuesday" are those of Tuesday's service, 01:30 Wednesday included,
on both databases without any time zone arithmetic in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import ColumnElement, exists, func, or_
from sqlmodel import col, select

from core import clock
from core.commands import LINE
from core.domain import NotFound, OrderStatus
from core.models import Order, OrderItem, Restaurant, utcnow
from core.paging import Page, Window, page
from core.services.orders import OrderView, view_of
from core.unit_of_work import UnitOfWork

OrderSort = Literal["newest", "oldest", "total"]
SearchText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), LINE]


class OrderQuery(BaseModel):
    """Which orders, in which order. Every filter given must hold (AND); none given is every order.

    - `statuses`: any of them; `date_from`/`date_to`: business dates, both ends included;
    - `table`: the table's name, whole, in any case; `q`: a piece of the table, pickup, server, notes
      or an item's name, in any case (on SQLite, case folds for ASCII letters only: its `lower()`);
    - `sort`: `newest` (placed last first), `oldest`, `total` (largest first, then newest).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    statuses: frozenset[OrderStatus] = frozenset()
    date_from: date | None = None
    date_to: date | None = None
    table: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40), LINE] | None = None
    q: SearchText | None = None
    sort: OrderSort = "newest"

    @model_validator(mode="after")
    def _range_in_order(self) -> Self:
        if self.date_from is not None and self.date_to is not None and self.date_from > self.date_to:
            raise ValueError(f"from ({self.date_from}) is after to ({self.date_to})")
        return self


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    """Case-insensitive `text` inside `column`; `%` and `_` in it are matched as themselves."""
    return func.lower(column).contains(text.lower(), autoescape=True)


def _conditions(restaurant_id: int, query: OrderQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [col(Order.restaurant_id) == restaurant_id]
    if query.statuses:
        conditions.append(col(Order.status).in_(sorted(query.statuses)))
    if query.date_from is not None:
        conditions.append(col(Order.business_date) >= query.date_from)
    if query.date_to is not None:
        conditions.append(col(Order.business_date) <= query.date_to)
    if query.table is not None:
        conditions.append(func.lower(col(Order.table_name)) == query.table.lower())
    if query.q is not None:
        item_named = exists().where(col(OrderItem.order_id) == col(Order.id), _contains(col(OrderItem.name), query.q))
        fields = (Order.table_name, Order.pickup_name, Order.server_name, Order.notes)
        conditions.append(or_(*(_contains(col(field), query.q) for field in fields), item_named))
    return conditions


_SORTS = {
    "newest": (col(Order.id).desc(),),
    "oldest": (col(Order.id).asc(),),
    "total": (col(Order.total_cents).desc(), col(Order.id).desc()),
}


def list_orders(uow: UnitOfWork, restaurant_id: int, query: OrderQuery, window: Window) -> Page[OrderView]:
    """One page of the orders `query` selects, and how many it selects in all."""
    selected = select(Order).where(*_conditions(restaurant_id, query)).order_by(*_SORTS[query.sort])
    found = page(uow, selected, window)
    return Page([view_of(uow, order) for order in found.rows], found.count)


@dataclass(frozen=True)
class DaySummary:
    """One business day's orders and money, in hundredths of the restaurant's currency.

    `revenue_cents`: what the day's orders that were not cancelled total; `refunds_cents`: what was
    refunded of those same orders (by the order's day, whenever the refund was made); `net_cents`: the
    difference. A cancelled order counts in `by_status` only."""

    business_date: date
    orders: int
    by_status: dict[str, int]
    revenue_cents: int
    refunds_cents: int

    @property
    def net_cents(self) -> int:
        return self.revenue_cents - self.refunds_cents


def business_today(uow: UnitOfWork, restaurant_id: int, now: datetime | None = None) -> date:
    """The restaurant's business date at `now` (the current instant by default)."""
    restaurant = uow.session.get(Restaurant, restaurant_id)
    if restaurant is None:
        raise NotFound(f"restaurant {restaurant_id} not found")
    return clock.business_date(now or utcnow(), restaurant.timezone, restaurant.day_starts_at)


def day_summary(
    uow: UnitOfWork, restaurant_id: int, day: date | None = None, now: datetime | None = None
) -> DaySummary:
    """The totals of business day `day`, today's (at `now`) when it is None."""
    day = day or business_today(uow, restaurant_id, now)
    rows = uow.session.exec(
        select(
            col(Order.status),
            func.count(),
            func.coalesce(func.sum(Order.total_cents), 0),
            func.coalesce(func.sum(Order.refunded_cents), 0),
        )
        .where(col(Order.restaurant_id) == restaurant_id, col(Order.business_date) == day)
        .group_by(col(Order.status))
    ).all()
    by_status = {str(status): 0 for status in OrderStatus}
    revenue = refunds = 0
    for status, count, total, refunded in rows:
        by_status[status] = int(count)
        if status != OrderStatus.CANCELLED:
            revenue += int(total)
            refunds += int(refunded)
    return DaySummary(day, sum(by_status.values()), by_status, revenue, refunds)
