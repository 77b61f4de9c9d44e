"""Restaurants: the tenants of the bus. Who may add one is the caller's check (a super_admin)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime

from sqlmodel import col, select

from core import clock
from core.commands import RestaurantIn, RestaurantUpdate
from core.domain import DomainError, NotFound
from core.locking import locked
from core.models import Restaurant, utcnow
from core.paging import Page, Window, page
from core.unit_of_work import UnitOfWork


def create_restaurant(uow: UnitOfWork, data: RestaurantIn) -> Restaurant:
    restaurant = Restaurant(
        name=data.name, currency=data.currency, timezone=data.timezone, day_starts_at=data.day_starts_at
    )
    uow.session.add(restaurant)
    uow.session.flush()  # its id, for the answer
    return restaurant


def open_restaurant(uow: UnitOfWork, rid: int) -> Restaurant:
    """The restaurant, for a use case that adds to it (a device, a user): NotFound, or a conflict when
    it is archived (`core.services.archive`)."""
    restaurant = uow.session.get(Restaurant, rid)
    if restaurant is None:
        raise NotFound(f"restaurant {rid} not found")
    if restaurant.archived_at is not None:
        raise DomainError(f"restaurant {rid} is archived; nothing can be added to it")
    return restaurant


def list_restaurants(uow: UnitOfWork, window: Window, only: Collection[int] | None = None) -> Page[Restaurant]:
    """The restaurants not archived, all of them or those of `only` (an admin's own; empty for a caller of none)."""
    query = select(Restaurant).where(col(Restaurant.archived_at).is_(None)).order_by(col(Restaurant.id))
    if only is not None:
        query = query.where(col(Restaurant.id).in_(only))
    return page(uow, query, window)


def get_restaurant(uow: UnitOfWork, rid: int) -> Restaurant:
    restaurant = uow.session.get(Restaurant, rid)
    if restaurant is None:
        raise NotFound(f"restaurant {rid} not found")
    return restaurant


def update_restaurant(uow: UnitOfWork, rid: int, data: RestaurantUpdate) -> Restaurant:
    """Name, time zone, day start. Locked: the row is the one `orders.next_number` counts under."""
    restaurant = locked(uow.session, Restaurant, rid)
    if restaurant is None:
        raise NotFound(f"restaurant {rid} not found")
    if restaurant.archived_at is not None:
        raise DomainError(f"restaurant {rid} is archived; it cannot be changed")
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(restaurant, field, value)
    uow.session.add(restaurant)
    return restaurant


def local_today(uow: UnitOfWork, rid: int, now: datetime | None = None) -> date:
    """The calendar date on the restaurant's wall clock at `now` (the current instant by default):
    what `available_days` is read against (`core.clock`)."""
    restaurant = get_restaurant(uow, rid)
    return clock.local_date(now or utcnow(), restaurant.timezone)
