"""Reading committed events back: the catch-up of a client that missed some."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from core.models import OutboxEvent
from core.unit_of_work import UnitOfWork


def events_after(uow: UnitOfWork, restaurant_id: int, after: int, limit: int) -> list[dict[str, Any]]:
    """The envelopes with seq > `after`, in seq order, whether or not the relay has published them yet."""
    query = (
        select(col(OutboxEvent.envelope))
        .where(OutboxEvent.restaurant_id == restaurant_id, col(OutboxEvent.seq) > after)
        .order_by(col(OutboxEvent.seq))
        .limit(limit)
    )
    return list(uow.session.scalars(query))
