"""Restaurants: a super_admin (the chain's operator) adds them; admins read their own."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import col, select

from api.deps import CurrentUser, UowDep
from core.models import Restaurant
from core.schemas import RestaurantIn, RestaurantOut

router = APIRouter(prefix="/restaurants", tags=["restaurants"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_restaurant(caller: CurrentUser, body: RestaurantIn, uow: UowDep) -> RestaurantOut:
    if caller.role != "super_admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a super_admin adds restaurants")
    restaurant = Restaurant(name=body.name)
    uow.session.add(restaurant)
    uow.commit()
    return RestaurantOut.model_validate(restaurant, from_attributes=True)


@router.get("")
def list_restaurants(caller: CurrentUser, uow: UowDep) -> list[RestaurantOut]:
    query = select(Restaurant).order_by(col(Restaurant.id))
    if caller.role != "super_admin":
        query = query.where(Restaurant.id == caller.restaurant_id)
    return [RestaurantOut.model_validate(row, from_attributes=True) for row in uow.session.exec(query)]
