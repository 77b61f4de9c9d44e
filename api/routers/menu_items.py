from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, status

from api.deps import AdminScope, CurrentUser, Paging, StaffScope, UowDep
from api.schemas import MenuItemOut, Page, item_out
from core.commands import Id, MenuItemIn, MenuItemUpdate
from core.services import inventory, menu, restaurants

router = APIRouter(prefix="/restaurants/{restaurant_id}/menu-items", tags=["menu-items"])


def _local_today(rid: StaffScope, uow: UowDep) -> date:
    """The restaurant's local date, for each item's `available_now` and `availability`."""
    return restaurants.local_today(uow, rid)


LocalToday = Annotated[date, Depends(_local_today)]


@router.get("")
def list_menu_items(rid: StaffScope, uow: UowDep, window: Paging, today: LocalToday) -> Page[MenuItemOut]:
    """Each item says whether it can be ordered now on the restaurant's clock (`availability`)."""
    found = inventory.list_items(uow, rid, window)
    return Page(data=[item_out(item, today) for item in found.rows], count=found.count)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_menu_item(
    rid: AdminScope, body: MenuItemIn, caller: CurrentUser, uow: UowDep, today: LocalToday
) -> MenuItemOut:
    return item_out(menu.create_item(uow, rid, body, actor=caller.sub), today)


@router.get("/{item_id}")
def get_menu_item(rid: StaffScope, item_id: Id, uow: UowDep, today: LocalToday) -> MenuItemOut:
    return item_out(inventory.get_item(uow, rid, item_id), today)


@router.patch("/{item_id}")
def update_menu_item(rid: AdminScope, item_id: Id, body: MenuItemUpdate, uow: UowDep, today: LocalToday) -> MenuItemOut:
    return item_out(menu.update_item(uow, rid, item_id, body), today)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_menu_item(rid: AdminScope, item_id: Id, uow: UowDep) -> None:
    menu.delete_item(uow, rid, item_id)
