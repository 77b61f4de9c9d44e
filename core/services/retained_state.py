"""The retained state topics as the database knows them: what a broker should hold, read in one snapshot.

A state topic repeats the envelope of the event that last changed it, and the broker got that
envelope from the relay. So the state worth republishing is the one of the *published* events
only: the relay publishes the rest afterwards, in seq order, each one moving the state forward,
and a screen never sees an older state after a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from core import events
from core.domain import OPEN_STATUSES, is_open
from core.models import Device, MenuItem, Order, OutboxEvent, Restaurant
from core.topics import PRESENCE_STATES
from core.unit_of_work import UnitOfWork

ORDER_EVENTS = (events.NEW_ORDER, events.ORDER_UPDATED)


@dataclass(frozen=True)
class Presence:
    """A device's last known presence, as the bus recorded it from the device's own status messages."""

    restaurant_id: int
    device_id: str
    kind: str
    state: str
    boot_id: str | None


@dataclass(frozen=True)
class RetainedState:
    orders: list[dict[str, Any]]  # the envelope that last changed each order open as of the snapshot
    items: list[dict[str, Any]]  # the last `inventory_updated` envelope of each item that exists
    presence: list[Presence]  # each unrevoked device the bus has heard from


def read(uow: UnitOfWork) -> RetainedState:
    """One snapshot (the caller's unit of work) of the state topics; never writes."""
    return RetainedState(orders=_open_orders(uow), items=_items(uow), presence=_presence(uow))


def _latest_published(uow: UnitOfWork, types: tuple[str, ...], path: tuple[str, ...], keys: Any) -> list[dict]:
    """The envelope of the last published event of `types` for each key (read at `path`) in `keys`."""
    key = col(OutboxEvent.envelope)[path].as_integer()
    last_ids = (
        select(func.max(OutboxEvent.id))
        .where(
            col(OutboxEvent.type).in_(types),
            col(OutboxEvent.published_at).is_not(None),
            col(OutboxEvent.dead_letter_at).is_(None),  # the broker could not take it: never republished
            key.in_(keys),
        )
        .group_by(key)
    )
    query = select(col(OutboxEvent.envelope)).where(col(OutboxEvent.id).in_(last_ids)).order_by(col(OutboxEvent.id))
    return list(uow.session.scalars(query))


def _open_orders(uow: UnitOfWork) -> list[dict[str, Any]]:
    # An order open now whose last published event says closed is being reopened by an event not
    # yet published: it has no state as of the snapshot, and gets one when that event goes out.
    open_now = select(col(Order.id)).where(
        col(Order.status).in_([str(status) for status in OPEN_STATUSES]), col(Order.restaurant_id).in_(_live())
    )
    found = _latest_published(uow, ORDER_EVENTS, ("data", "order", "id"), open_now)
    return [envelope for envelope in found if is_open(envelope["data"]["order"]["status"])]


def _items(uow: UnitOfWork) -> list[dict[str, Any]]:
    existing = select(col(MenuItem.id)).where(col(MenuItem.restaurant_id).in_(_live()))
    return _latest_published(uow, (events.INVENTORY_UPDATED,), ("data", "item", "id"), existing)


def _live() -> Any:
    """The restaurants not archived: an archived one has no live state, so a rebuild clears its topics."""
    return select(col(Restaurant.id)).where(col(Restaurant.archived_at).is_(None))


def _presence(uow: UnitOfWork) -> list[Presence]:
    query = (
        select(col(Device.restaurant_id), col(Device.id), col(Device.kind), col(Device.presence), col(Device.boot_id))
        .where(col(Device.presence).in_(PRESENCE_STATES), col(Device.revoked).is_(False))
        .order_by(col(Device.id))
    )
    return [Presence(*row) for row in uow.session.execute(query)]
