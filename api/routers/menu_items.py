from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AdminScope, CurrentUser, Paging, StaffScope, UowDep
from api.schemas import MenuItemOut, Page, item_out
from core.commands import Id, MenuItemIn, MenuItemUpdate
from core.services import inventory, menu

router = APIRouter(prefix="/restaurants/{restaurant_id}/menu-items", tags=["menu-items"])


@router.get("")
def list_menu_items(rid: StaffScope, uow: UowDep, window: Paging) -> Page[MenuItemOut]:
    found = inventory.list_items(uow, rid, window)
    return Page(data=[item_out(item) for item in found.rows], count=found.count)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_menu_item(rid: AdminScope, body: MenuItemIn, caller: CurrentUser, uow: UowDep) -> MenuItemOut:
    return item_out(menu.create_item(uow, rid, body, actor=caller.sub))


@router.get("/{item_id}")
def get_menu_item(rid: StaffScope, item_id: Id, uow: UowDep) -> MenuItemOut:
    return item_out(inventory.get_item(uow, rid, item_id))


@router.patch("/{item_id}")
def update_menu_item(rid: AdminScope, item_id: Id, body: MenuItemUpdate, uow: UowDep) -> MenuItemOut:
    return item_out(menu.update_item(uow, rid, item_id, body))


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_menu_item(rid: AdminScope, item_id: Id, uow: UowDep) -> None:
    menu.delete_item(uow, rid, item_id)
