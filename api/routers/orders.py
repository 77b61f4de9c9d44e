from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, ValidationError

from api.deps import CurrentUser, Paging, StaffScope, UowDep
from api.idempotency import Idempotent
from api.schemas import (
    DaySummaryOut,
    OrderOut,
    Page,
    StatusIn,
    TicketOut,
    order_out,
    summary_out,
    ticket_out,
)
from core.commands import Id, OrderEditIn, OrderIn
from core.domain import OrderStatus
from core.services import order_edits, order_list, orders, tickets
from core.services.order_list import OrderQuery, OrderSort

router = APIRouter(prefix="/restaurants/{restaurant_id}/orders", tags=["orders"])


def _plain_date(value: object) -> object:
    """A business date is a day: `2026-06-01`, not a datetime that happens to be midnight."""
    if isinstance(value, str) and not (len(value) == 10 and value[4] == "-" and value[7] == "-"):
        raise ValueError("a date as YYYY-MM-DD")
    return value


BusinessDate = Annotated[date, BeforeValidator(_plain_date)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_order(rid: StaffScope, body: OrderIn, caller: CurrentUser, uow: UowDep, once: Idempotent) -> OrderOut:
    return once.keep(order_out(orders.place_order(uow, rid, body, actor=caller.sub)))


def order_query(
    status: Annotated[list[OrderStatus] | None, Query(max_length=len(OrderStatus), description="any of these")] = None,
    date_from: Annotated[BusinessDate | None, Query(alias="from", description="business date, included")] = None,
    date_to: Annotated[BusinessDate | None, Query(alias="to", description="business date, included")] = None,
    table: Annotated[str | None, Query(max_length=40, description="the table, whole, any case")] = None,
    q: Annotated[
        str | None, Query(max_length=100, description="in table, pickup, server, notes or item names, any case")
    ] = None,
    sort: OrderSort = "newest",
) -> OrderQuery:
    """The list's filters as query parameters; a rule across them (from after to) is a 422 like any other."""
    try:
        return OrderQuery(
            statuses=frozenset(status or ()), date_from=date_from, date_to=date_to, table=table, q=q, sort=sort
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc


@router.get("")
def list_orders(
    rid: StaffScope, uow: UowDep, window: Paging, query: Annotated[OrderQuery, Depends(order_query)]
) -> Page[OrderOut]:
    """Orders by status, business date range (the restaurant's local days), table and free text;
    newest first unless `sort` says otherwise; `count` is how many match in all."""
    found = order_list.list_orders(uow, rid, query, window)
    return Page(data=[order_out(view) for view in found.rows], count=found.count)


@router.get("/summary")
def day_summary(
    rid: StaffScope,
    uow: UowDep,
    day: Annotated[BusinessDate | None, Query(alias="date", description="a business date; today's by default")] = None,
) -> DaySummaryOut:
    """One business day's totals: orders by status, revenue (orders not cancelled), refunds, net."""
    return summary_out(order_list.day_summary(uow, rid, day))


@router.get("/{order_id}")
def get_order(rid: StaffScope, order_id: Id, uow: UowDep) -> OrderOut:
    return order_out(orders.view_of(uow, orders.get_order(uow, rid, order_id)))


@router.post("/{order_id}/status")
def change_order_status(
    rid: StaffScope, order_id: Id, body: StatusIn, caller: CurrentUser, uow: UowDep, once: Idempotent
) -> OrderOut:
    return once.keep(order_out(orders.change_status(uow, rid, order_id, body.status, actor=caller.sub)))


@router.post("/{order_id}/reprint")
def reprint_order(rid: StaffScope, order_id: Id, uow: UowDep) -> OrderOut:
    """Send the order's kitchen tickets again; printers mark them REPRINT."""
    return order_out(orders.reprint(uow, rid, order_id))


@router.get("/{order_id}/tickets")
def list_order_tickets(rid: StaffScope, order_id: Id, uow: UowDep, window: Paging) -> Page[TicketOut]:
    """The order's kitchen tickets, newest first."""
    orders.get_order(uow, rid, order_id)
    found = tickets.list_tickets(uow, rid, order_id, None, window)
    return Page(data=[ticket_out(ticket) for ticket in found.rows], count=found.count)


@router.patch("/{order_id}")
def edit_order(
    rid: StaffScope, order_id: Id, body: OrderEditIn, caller: CurrentUser, uow: UowDep, once: Idempotent
) -> OrderOut:
    """Edit an open order: add lines, remove or reduce lines (by line id), change a line's modifiers or notes,
    the order's notes. Stock moves with it; the kitchen gets ADD and VOID chits for the stations touched.
    409 for a closed order or an item short (nothing is written), 404 for a line or item it does not have."""
    return once.keep(order_out(order_edits.edit_order(uow, rid, order_id, body, actor=caller.sub)))
