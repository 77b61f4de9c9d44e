"""A create/read/update/delete router for the simple per-restaurant resources (categories, menus).

Each resource names its own routes and id (`list_categories`, `/categories/{category_id}`), so the
documentation and generated clients read as if each router were written by hand.
"""

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel

from api.deps import AdminScope, Paging, StaffScope, UowDep
from api.schemas import Page
from core.models import Category, Menu
from core.services import menu
from core.sizes import MAX_ID


def crud_router(
    model: type[Category] | type[Menu], create: type[BaseModel], update: type[BaseModel], path: str, one: str
) -> APIRouter:
    """`path` is the plural in the URL and the tag (`categories`); `one` the singular (`category`)."""
    router = APIRouter(prefix=f"/restaurants/{{restaurant_id}}/{path}", tags=[path])
    key = f"{one}_id"
    RowId = Annotated[int, Path(alias=key, ge=1, le=MAX_ID)]

    # The schema classes are chosen at run time (one router per resource); FastAPI reads them from the
    # signatures, where mypy accepts only static types.
    def list_rows(rid: StaffScope, uow: UowDep, window: Paging):
        found = menu.list_rows(uow, model, rid, window)
        return {"data": found.rows, "count": found.count}

    def create_row(rid: AdminScope, body: create, uow: UowDep):  # type: ignore[valid-type]
        return menu.create_row(uow, model, rid, body)

    def get_row(rid: StaffScope, row_id: RowId, uow: UowDep):
        return menu.get_row(uow, model, rid, row_id)

    def update_row(rid: AdminScope, row_id: RowId, body: update, uow: UowDep):  # type: ignore[valid-type]
        return menu.update_row(uow, model, rid, row_id, body)

    def delete_row(rid: AdminScope, row_id: RowId, uow: UowDep) -> None:
        menu.delete_row(uow, model, rid, row_id)

    router.add_api_route("", list_rows, methods=["GET"], name=f"list_{path}", response_model=Page[model])  # type: ignore[valid-type]
    router.add_api_route(
        "",
        create_row,
        methods=["POST"],
        name=f"create_{one}",
        status_code=status.HTTP_201_CREATED,
        response_model=model,
    )
    router.add_api_route(f"/{{{key}}}", get_row, methods=["GET"], name=f"get_{one}", response_model=model)
    router.add_api_route(f"/{{{key}}}", update_row, methods=["PATCH"], name=f"update_{one}", response_model=model)
    router.add_api_route(
        f"/{{{key}}}", delete_row, methods=["DELETE"], name=f"delete_{one}", status_code=status.HTTP_204_NO_CONTENT
    )
    return router
