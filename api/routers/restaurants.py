"""Restaurants: a super_admin (the chain's operator) adds them; admins read their own."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import CurrentUser, Paging, UowDep
from api.openapi import errors
from api.schemas import Page, RestaurantOut, restaurant_out
from core.commands import RestaurantIn
from core.services import restaurants

router = APIRouter(prefix="/restaurants", tags=["restaurants"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(403, why="Only a super_admin adds restaurants"))
def create_restaurant(caller: CurrentUser, body: RestaurantIn, uow: UowDep) -> RestaurantOut:
    if caller.role != "super_admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a super_admin adds restaurants")
    return restaurant_out(restaurants.create_restaurant(uow, body))


@router.get("")
def list_restaurants(caller: CurrentUser, uow: UowDep, window: Paging) -> Page[RestaurantOut]:
    """All of them for a super_admin; the caller's own for everyone else."""
    own = [caller.restaurant_id] if caller.restaurant_id is not None else []
    only = None if caller.role == "super_admin" else own
    found = restaurants.list_restaurants(uow, window, only)
    return Page(data=[restaurant_out(row) for row in found.rows], count=found.count)
