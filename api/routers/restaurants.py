"""Restaurants: a super_admin (the chain's operator) adds them; admins read their own."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import CurrentUser, UowDep
from api.schemas import RestaurantOut, restaurant_out
from core.commands import RestaurantIn
from core.services import restaurants

router = APIRouter(prefix="/restaurants", tags=["restaurants"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_restaurant(caller: CurrentUser, body: RestaurantIn, uow: UowDep) -> RestaurantOut:
    if caller.role != "super_admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a super_admin adds restaurants")
    return restaurant_out(restaurants.create_restaurant(uow, body))


@router.get("")
def list_restaurants(caller: CurrentUser, uow: UowDep) -> list[RestaurantOut]:
    own = [caller.restaurant_id] if caller.restaurant_id is not None else []
    only = None if caller.role == "super_admin" else own
    return [restaurant_out(row) for row in restaurants.list_restaurants(uow, only)]
