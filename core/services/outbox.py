"""The outbox after the commit: reading committed events back (the catch-up of a client that missed
some), setting aside an event the relay cannot publish, and forgetting published events after the
retention period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from core.models import OutboxEvent, Restaurant, utcnow
from core.services.notifications import notify
from core.unit_of_work import UnitOfWork

DEAD_LETTER_KIND = "outbox_dead_letter"  # the notification staff get for a dead-lettered event


class Pruned(Exception):
    """Events after the requested seq were deleted after the retention period: start again from a snapshot."""

    def __init__(self, pruned_through: int) -> None:
        super().__init__(f"events up to seq {pruned_through} are no longer kept")
        self.pruned_through = pruned_through


def events_after(uow: UnitOfWork, restaurant_id: int, after: int, limit: int) -> list[dict[str, Any]]:
    """The envelopes with seq > `after`, in seq order, whether or not the relay has published them yet.

    A dead-lettered event carries `"mqtt_withheld": true`: no MQTT copy of it went out, this is the
    only way to get it. Raises `Pruned` when some event after `after` no longer exists.
    """
    pruned_through = pruned_through_seq(uow, restaurant_id)
    if after < pruned_through:
        raise Pruned(pruned_through)
    query = (
        select(col(OutboxEvent.envelope), col(OutboxEvent.dead_letter_at))
        .where(OutboxEvent.restaurant_id == restaurant_id, col(OutboxEvent.seq) > after)
        .order_by(col(OutboxEvent.seq))
        .limit(limit)
    )
    return [
        envelope if withheld is None else {**envelope, "mqtt_withheld": True}
        for envelope, withheld in uow.session.execute(query)
    ]


def pruned_through_seq(uow: UnitOfWork, restaurant_id: int) -> int:
    """The highest seq of the restaurant that was pruned (0 when none).

    Pruning deletes a prefix of each restaurant's seqs (see `prune`), so every seq below the oldest
    kept one was pruned; when none is kept, all of them up to the restaurant's latest seq were."""
    oldest = uow.session.execute(
        select(func.min(OutboxEvent.seq)).where(OutboxEvent.restaurant_id == restaurant_id)
    ).scalar_one()
    if oldest is not None:
        return int(oldest) - 1
    latest = uow.session.execute(select(Restaurant.event_seq).where(Restaurant.id == restaurant_id)).scalar()
    return int(latest or 0)


def prune(uow: UnitOfWork, published_before: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` events published before `published_before`; returns how many.

    Only a prefix of each restaurant's seqs is deleted: an event goes only when every earlier event
    of its restaurant goes too, so an unpublished or recent event keeps everything after it, and
    `pruned_through_seq` can tell a pruned seq from one that never existed."""
    earlier = aliased(OutboxEvent)
    blocker = exists().where(
        col(earlier.restaurant_id) == col(OutboxEvent.restaurant_id),
        col(earlier.seq) < col(OutboxEvent.seq),
        or_(col(earlier.published_at).is_(None), col(earlier.published_at) >= published_before),
    )
    ids = list(
        uow.session.scalars(
            select(col(OutboxEvent.id))
            .where(col(OutboxEvent.published_at) < published_before, ~blocker)
            .order_by(col(OutboxEvent.id))
            .limit(batch_size)
        )
    )
    if ids:
        uow.session.execute(delete(OutboxEvent).where(col(OutboxEvent.id).in_(ids)))
    return len(ids)


def dead_letter(uow: UnitOfWork, row_id: int, reason: str, detail: str) -> OutboxEvent | None:
    """Set an unpublished event aside: stamped done, with why, and a notification for the restaurant's
    staff (none for a dead-lettered notification of this kind, which would only make another one).
    None when the event is gone or already done."""
    row = uow.session.get(OutboxEvent, row_id)
    if row is None or row.published_at is not None:
        return None
    now = utcnow()
    row.published_at = row.dead_letter_at = now
    row.dead_letter_reason = f"{reason}: {detail}"[:500]
    uow.session.add(row)
    uow.session.flush()
    note = row.envelope.get("data", {}).get("notification", {})
    if not (row.type == "notification" and note.get("kind") == DEAD_LETTER_KIND):
        notify(
            uow,
            row.restaurant_id,
            kind=DEAD_LETTER_KIND,
            title=f"Event {row.seq} ({row.type}) was not sent to screens and printers",
            body=f"{detail}. Screens fetch it by seq from the events endpoint; check the order by hand.",
        )
    return row


def count_attempt(uow: UnitOfWork, row_id: int) -> int:
    """One more broker disconnect while this event was in flight; returns the count so far."""
    uow.session.execute(
        update(OutboxEvent)
        .where(col(OutboxEvent.id) == row_id)
        .values(attempts=func.coalesce(col(OutboxEvent.attempts), 0) + 1)
    )
    return int(uow.session.execute(select(OutboxEvent.attempts).where(OutboxEvent.id == row_id)).scalar() or 0)
