"""Restaurants: a super_admin (the chain's operator) adds them, each with its first admin, and archives
them; admins read their own."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import AdminScope, CurrentUser, Paging, UowDep
from api.openapi import errors
from api.schemas import ArchivedOut, Page, RestaurantCreatedOut, RestaurantOut, invited_out, restaurant_out
from core.commands import Id, NewRestaurantIn, RestaurantUpdate
from core.services import archive, restaurants, users
from core.services.users import Actor

router = APIRouter(prefix="/restaurants", tags=["restaurants"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=errors(403, 409, why=None),
)
def create_restaurant(
    caller: CurrentUser, body: NewRestaurantIn, uow: UowDep, response: Response
) -> RestaurantCreatedOut:
    """A restaurant and its first `admin` (email, name) in one transaction; the admin's one-time password
    is in this answer only. 409 (and no restaurant) when the admin's email is taken."""
    response.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
    actor = Actor.from_claims(caller.claims)
    restaurant, admin = users.create_restaurant(uow, actor, body)
    return RestaurantCreatedOut(
        **restaurant_out(restaurant).model_dump(), admin=invited_out(admin) if admin is not None else None
    )


@router.get("")
def list_restaurants(caller: CurrentUser, uow: UowDep, window: Paging) -> Page[RestaurantOut]:
    """All of them for a super_admin; the caller's own for everyone else."""
    own = [caller.restaurant_id] if caller.restaurant_id is not None else []
    only = None if caller.role == "super_admin" else own
    found = restaurants.list_restaurants(uow, window, only)
    return Page(data=[restaurant_out(row) for row in found.rows], count=found.count)


@router.patch("/{restaurant_id}", responses=errors(403, 404, 409, why=None))
def update_restaurant(rid: AdminScope, body: RestaurantUpdate, uow: UowDep) -> RestaurantOut:
    """Its name, time zone (IANA, e.g. `Europe/Paris`) or the local hour its business day starts: by its
    admin or a super_admin. A new clock applies to orders placed from then on."""
    return restaurant_out(restaurants.update_restaurant(uow, rid, body))


@router.post("/{restaurant_id}/archive", responses=errors(403, 404, why=None))
def archive_restaurant(caller: CurrentUser, restaurant_id: Id, uow: UowDep) -> ArchivedOut:
    """Close a restaurant for good: its devices revoked, its staff removed, out of the lists; its orders and
    events stay (`core.services.archive`). A super_admin's; archiving again answers the same with zero counts."""
    done = archive.archive_restaurant(uow, Actor.from_claims(caller.claims), restaurant_id)
    assert done.restaurant.archived_at is not None
    return ArchivedOut(
        **restaurant_out(done.restaurant).model_dump(),
        archived_at=done.restaurant.archived_at,
        devices_revoked=done.devices_revoked,
        users_removed=done.users_removed,
    )
