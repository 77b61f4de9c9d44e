from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminScope, CurrentUser, Paging, StaffScope, UowDep
from api.idempotency import Idempotent
from api.schemas import (
    DamageIn,
    DeliveryIn,
    MenuItemOut,
    Page,
    StockAdjustIn,
    StockMovementOut,
    ThresholdIn,
    WriteOffIn,
    item_out,
    movement_out,
)
from core.commands import Id
from core.domain import MovementKind
from core.services import inventory

router = APIRouter(prefix="/restaurants/{restaurant_id}/inventory", tags=["inventory"])


@router.get("")
def list_stock(rid: StaffScope, uow: UowDep, window: Paging) -> Page[MenuItemOut]:
    """The stock-tracked items with their available quantity."""
    found = inventory.list_items(uow, rid, window, tracked_only=True)
    return Page(data=[item_out(item) for item in found.rows], count=found.count)


@router.post("/{item_id}/adjust")
def adjust_stock(
    rid: AdminScope, item_id: Id, body: StockAdjustIn, caller: CurrentUser, uow: UowDep, once: Idempotent
) -> MenuItemOut:
    item = inventory.adjust_stock(uow, rid, item_id, body.delta, body.reason, actor=caller.sub)
    return once.keep(item_out(item))


@router.post("/{item_id}/receive")
def receive_stock(
    rid: AdminScope, item_id: Id, body: DeliveryIn, caller: CurrentUser, uow: UowDep, once: Idempotent
) -> MenuItemOut:
    """A delivery: stock_quantity rises by `quantity`, and the ledger says `received` (an `adjust` is a
    counted correction); 409 for an item whose stock is not tracked."""
    item = inventory.receive(uow, rid, item_id, body.quantity, body.reason, actor=caller.sub)
    return once.keep(item_out(item))


@router.post("/{item_id}/damage")
def mark_damaged(
    rid: AdminScope, item_id: Id, body: DamageIn, caller: CurrentUser, uow: UowDep, once: Idempotent
) -> MenuItemOut:
    """Raises damaged_quantity only; stock_quantity is left as counted."""
    item = inventory.mark_damaged(uow, rid, item_id, body.quantity, body.reason, actor=caller.sub)
    return once.keep(item_out(item))


@router.post("/{item_id}/write-off")
def write_off(
    rid: AdminScope, item_id: Id, body: WriteOffIn, caller: CurrentUser, uow: UowDep, once: Idempotent
) -> MenuItemOut:
    """Removes damaged units from stock and from damaged together (available is unchanged); 409 for
    more than is damaged or an item whose stock is not tracked."""
    item = inventory.write_off(uow, rid, item_id, body.quantity, body.reason, actor=caller.sub)
    return once.keep(item_out(item))


@router.get("/{item_id}/movements")
def list_movements(
    rid: StaffScope,
    item_id: Id,
    uow: UowDep,
    window: Paging,
    kind: Annotated[MovementKind | None, Query(description="only the lines of this kind")] = None,
) -> Page[StockMovementOut]:
    """The item's stock ledger, newest first: every change with its kind, who made it and why. Its
    deltas summed over the whole ledger are the item's stock and damaged quantities."""
    found = inventory.movements(uow, rid, item_id, window, kind)
    return Page(data=[movement_out(line) for line in found.rows], count=found.count)


@router.put("/{item_id}/threshold")
def set_threshold(rid: AdminScope, item_id: Id, body: ThresholdIn, uow: UowDep, once: Idempotent) -> MenuItemOut:
    return once.keep(item_out(inventory.set_threshold(uow, rid, item_id, body.low_stock_threshold)))
