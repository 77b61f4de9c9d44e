"""Restaurants: the tenants of the bus. Who may add one is the caller's check (a super_admin)."""

from __future__ import annotations

from collections.abc import Collection

from sqlmodel import col, select

from core.commands import RestaurantIn
from core.models import Restaurant
from core.paging import Page, Window, page
from core.unit_of_work import UnitOfWork


def create_restaurant(uow: UnitOfWork, data: RestaurantIn) -> Restaurant:
    restaurant = Restaurant(name=data.name)
    uow.session.add(restaurant)
    uow.session.flush()  # its id, for the answer
    return restaurant


def list_restaurants(uow: UnitOfWork, window: Window, only: Collection[int] | None = None) -> Page[Restaurant]:
    """All restaurants, or those of `only` (an admin's own; empty for a caller of none)."""
    query = select(Restaurant).order_by(col(Restaurant.id))
    if only is not None:
        query = query.where(col(Restaurant.id).in_(only))
    return page(uow, query, window)
