from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminScope, Paging, StaffScope, UowDep
from api.idempotency import Idempotent
from api.schemas import DamageIn, MenuItemOut, Page, StockAdjustIn, ThresholdIn, item_out
from core.commands import Id
from core.services import inventory

router = APIRouter(prefix="/restaurants/{restaurant_id}/inventory", tags=["inventory"])


@router.get("")
def list_stock(rid: StaffScope, uow: UowDep, window: Paging) -> Page[MenuItemOut]:
    """The stock-tracked items with their available quantity."""
    found = inventory.list_items(uow, rid, window, tracked_only=True)
    return Page(data=[item_out(item) for item in found.rows], count=found.count)


@router.post("/{item_id}/adjust")
def adjust_stock(rid: AdminScope, item_id: Id, body: StockAdjustIn, uow: UowDep, once: Idempotent) -> MenuItemOut:
    return once.keep(item_out(inventory.adjust_stock(uow, rid, item_id, body.delta, body.reason)))


@router.post("/{item_id}/damage")
def mark_damaged(rid: AdminScope, item_id: Id, body: DamageIn, uow: UowDep, once: Idempotent) -> MenuItemOut:
    """Raises damaged_quantity only; stock_quantity is left as counted."""
    return once.keep(item_out(inventory.mark_damaged(uow, rid, item_id, body.quantity, body.reason)))


@router.put("/{item_id}/threshold")
def set_threshold(rid: AdminScope, item_id: Id, body: ThresholdIn, uow: UowDep, once: Idempotent) -> MenuItemOut:
    return once.keep(item_out(inventory.set_threshold(uow, rid, item_id, body.low_stock_threshold)))
