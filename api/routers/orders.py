from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import Paging, StaffScope, UowDep
from api.idempotency import Idempotent
from api.schemas import OrderOut, Page, StatusIn, TicketOut, order_out, ticket_out
from core.commands import Id, OrderIn
from core.domain import OrderStatus
from core.services import orders, tickets

router = APIRouter(prefix="/restaurants/{restaurant_id}/orders", tags=["orders"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_order(rid: StaffScope, body: OrderIn, uow: UowDep, once: Idempotent) -> OrderOut:
    return once.keep(order_out(orders.place_order(uow, rid, body)))


@router.get("")
def list_orders(rid: StaffScope, uow: UowDep, window: Paging, status: OrderStatus | None = None) -> Page[OrderOut]:
    """Newest first; only those in `status` when it is given."""
    found = orders.list_orders(uow, rid, status, window)
    return Page(data=[order_out(view) for view in found.rows], count=found.count)


@router.get("/{order_id}")
def get_order(rid: StaffScope, order_id: Id, uow: UowDep) -> OrderOut:
    return order_out(orders.view_of(uow, orders.get_order(uow, rid, order_id)))


@router.post("/{order_id}/status")
def change_order_status(rid: StaffScope, order_id: Id, body: StatusIn, uow: UowDep, once: Idempotent) -> OrderOut:
    return once.keep(order_out(orders.change_status(uow, rid, order_id, body.status)))


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
