"""An order's money: marking it paid, refunding it, and its refund history (core.services.refunds)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminScope, CurrentUser, Paging, StaffScope, UowDep
from api.idempotency import Idempotent
from api.schemas import OrderOut, Page, RefundIn, RefundOut, order_out, refund_out
from core.commands import Id
from core.rules.payments import LineRefund
from core.services import refunds

router = APIRouter(prefix="/restaurants/{restaurant_id}/orders", tags=["orders"])


@router.post("/{order_id}/pay")
def pay_order(rid: StaffScope, order_id: Id, uow: UowDep, once: Idempotent) -> OrderOut:
    """Mark the order paid (`paid_at`), which makes it refundable. 409 when it was paid already
    (retry with an Idempotency-Key to be safe) or is cancelled."""
    return once.keep(order_out(refunds.pay(uow, rid, order_id)))


@router.post("/{order_id}/refunds")
def refund_order(
    rid: AdminScope, caller: CurrentUser, order_id: Id, body: RefundIn, uow: UowDep, once: Idempotent
) -> OrderOut:
    """Refund an amount, order lines (the amount defaults to their value), or both, of a paid order.
    409 on an unpaid order, past what is left to refund, or for more of a line than is left of it."""
    uid = caller.claims.get("uid")
    done = refunds.refund(
        uow,
        rid,
        order_id,
        amount_cents=body.amount_cents,
        reason=body.reason,
        lines=[LineRefund(line.order_item_id, line.quantity) for line in body.lines],
        by=refunds.Refunder(caller.sub, uid if isinstance(uid, int) else None),
    )
    return once.keep(order_out(done.view))


@router.get("/{order_id}/refunds")
def list_refunds(rid: StaffScope, order_id: Id, uow: UowDep, window: Paging) -> Page[RefundOut]:
    """The order's refunds, oldest first."""
    found = refunds.list_refunds(uow, rid, order_id, window)
    return Page(data=[refund_out(row) for row in found.rows], count=found.count)
