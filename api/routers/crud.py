"""A create/read/update/delete router for the simple per-restaurant resources (categories, menus)."""

from fastapi import APIRouter, status
from pydantic import BaseModel

from api.deps import AdminScope, StaffScope, UowDep
from core.commands import Id
from core.models import Category, Menu
from core.services import menu


def crud_router(
    model: type[Category] | type[Menu], create: type[BaseModel], update: type[BaseModel], path: str
) -> APIRouter:
    router = APIRouter(prefix=f"/restaurants/{{rid}}/{path}", tags=[path])

    # The schema classes are chosen at run time (one router per resource); FastAPI reads them from the
    # signatures, where mypy accepts only static types.
    @router.get("", response_model=list[model])  # type: ignore[valid-type]
    def list_rows(rid: StaffScope, uow: UowDep):
        return menu.list_rows(uow, model, rid)

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=model)
    def create_row(rid: AdminScope, body: create, uow: UowDep):  # type: ignore[valid-type]
        return menu.create_row(uow, model, rid, body)

    @router.get("/{row_id}", response_model=model)
    def get_row(rid: StaffScope, row_id: Id, uow: UowDep):
        return menu.get_row(uow, model, rid, row_id)

    @router.patch("/{row_id}", response_model=model)
    def update_row(rid: AdminScope, row_id: Id, body: update, uow: UowDep):  # type: ignore[valid-type]
        return menu.update_row(uow, model, rid, row_id, body)

    @router.delete("/{row_id}", status_code=status.HTTP_204_NO_CONTENT)
    def delete_row(rid: AdminScope, row_id: Id, uow: UowDep) -> None:
        menu.delete_row(uow, model, rid, row_id)

    return router
