"""Archiving a restaurant: what "removing" one means on a bus whose ids are on tokens and topics.

A restaurant is never deleted. Its id is in every token and topic of its devices and staff, so a
deleted row whose id came back (SQLite reuses the highest id) would hand those to a new tenant; and
its orders, tickets and events are history a manager may still need. Archiving instead, in one
transaction:

- every device is revoked, as `DELETE …/devices/{id}` does (the broker's denylist refuses its token
  and disconnects it; a `device_updated` event each);
- every staff account and admin of it is removed (their logins end: `users.session_is_current`);
- `archived_at` is set, and it leaves `GET /restaurants` and the dashboard's restaurant picker;
- it has no live state any more (`retained_state`): the relay's next retained rebuild (at its next
  connection to the broker) clears its order and stock topics.

Archiving again changes nothing. Only a super_admin archives (the chain's operator; an admin
cannot close their own restaurant). `orderbus simulate` archives the restaurants it made.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import col, select

from core.domain import Forbidden, NotFound
from core.models import Device, Restaurant, User, utcnow
from core.services import devices
from core.services.users import Actor
from core.topics import SUPER_ADMIN
from core.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Archived:
    restaurant: Restaurant
    devices_revoked: int
    users_removed: int


def archive_restaurant(uow: UnitOfWork, actor: Actor, rid: int) -> Archived:
    """Archive restaurant `rid` (see the module's docstring); the counts are 0 when it was archived already."""
    if actor.role != SUPER_ADMIN:
        raise Forbidden("only a super_admin archives restaurants")
    restaurant = uow.session.get(Restaurant, rid)
    if restaurant is None:
        raise NotFound(f"restaurant {rid} not found")
    if restaurant.archived_at is not None:
        return Archived(restaurant, 0, 0)
    live = select(Device.id).where(Device.restaurant_id == rid, col(Device.revoked).is_(False))
    revoked = [devices.revoke_device(uow, rid, device_id) for device_id in sorted(uow.session.exec(live))]
    removed = uow.session.exec(delete(User).where(col(User.restaurant_id) == rid))
    # the restaurant row last (core.locking): the revocations' events have locked it already, if any
    uow.session.refresh(restaurant, with_for_update=True)
    first = restaurant.archived_at is None  # another archive may have committed while we waited
    restaurant.archived_at = restaurant.archived_at or utcnow()
    uow.session.add(restaurant)
    uow.session.flush()
    return Archived(restaurant, len(revoked) if first else 0, int(removed.rowcount or 0))
