"""The outbox after the commit: reading committed events back (the catch-up of a client that missed
some), setting aside an event the relay cannot publish, and forgetting published events after the
retention period.

Dashboards read every event of their restaurant (`events_after`). A device reads only what its
topic ACL lets it receive over MQTT (`device_events_after`, `device_snapshot`): which topics an
event travels on is `event_topics`, and whether a device may receive a topic is a `MayReceive`
the caller hands in (the broker's policy, given to the API by the composition root).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, or_, true, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from core import events, topics
from core.domain import OPEN_STATUSES
from core.locking import locked
from core.models import Order, OutboxEvent, Restaurant, utcnow
from core.services.notifications import notify
from core.services.orders import view_of
from core.unit_of_work import UnitOfWork

DEAD_LETTER_KIND = "outbox_dead_letter"  # the notification staff get for a dead-lettered event


class Pruned(Exception):
    """Events after the requested seq were deleted after the retention period: start again from a snapshot."""

    def __init__(self, pruned_through: int) -> None:
        super().__init__(f"events up to seq {pruned_through} are no longer kept")
        self.pruned_through = pruned_through


MayReceive = Callable[[str], bool]  # may this reader receive a message on this topic?

SCAN_BATCH = 500  # rows read at a time while filtering
SCAN_LIMIT = 5000  # rows one device request scans at most; the page then says where to go on

# The keyless channel each event type goes out on (kitchen tickets go to their station instead).
CHANNEL_OF = {
    events.NEW_ORDER: topics.ORDERS,
    events.ORDER_UPDATED: topics.ORDERS,
    events.INVENTORY_UPDATED: topics.INVENTORY,
    events.LOW_STOCK: topics.LOW_STOCK,
    events.MENU_UPDATED: topics.MENU,
    events.CATEGORY_UPDATED: topics.CATEGORIES,
    events.NOTIFICATION: topics.NOTIFICATIONS,
}


class SeqGone(LookupError):
    """The reader's seq cannot be continued: the events right after it are no longer kept, or it is
    ahead of the restaurant's latest (the bus's data was reset). It must restart from a snapshot."""


@dataclass(frozen=True)
class DevicePage:
    """`events`: what the device may see with seq in (after, `next_after`], in seq order.

    `next_after` is how far the read got, whether or not the device could see the events there:
    the device asks again from it. `head` is the restaurant's latest committed seq; the device is
    caught up when `next_after == head`.
    """

    events: list[dict[str, Any]]
    next_after: int
    head: int


@dataclass(frozen=True)
class DeviceSnapshot:
    """The open orders the device may see, as they stand at `seq` or later; events after `seq` follow."""

    seq: int
    open_orders: list[dict[str, Any]]


def event_topics(envelope: Mapping[str, Any]) -> list[str]:
    """Every topic the relay publishes this event on: its channel (or station) and its retained state topic."""
    rid, kind, data = envelope["restaurant_id"], envelope["type"], envelope.get("data") or {}
    if kind == events.KITCHEN_TICKET:
        return [topics.tickets(rid, data["ticket"]["station"])]
    found = [topics.channel(rid, CHANNEL_OF.get(kind, topics.NOTIFICATIONS))]
    if kind in (events.NEW_ORDER, events.ORDER_UPDATED):
        found.append(topics.open_order(rid, data["order"]["id"]))
    elif kind == events.INVENTORY_UPDATED:
        found.append(topics.inventory_item(rid, data["item"]["id"]))
    elif kind == events.MENU_UPDATED and data.get("action") == "deleted" and "menu_item" in data:
        found.append(topics.inventory_item(rid, data["menu_item"]["id"]))
    return found


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
    row = locked(uow.session, OutboxEvent, row_id)  # two relays setting one event aside: one notification
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


def head_seq(uow: UnitOfWork, restaurant_id: int) -> int:
    """The restaurant's latest committed seq (0 before its first event)."""
    seq = uow.session.scalar(select(col(Restaurant.event_seq)).where(col(Restaurant.id) == restaurant_id))
    return seq or 0


def device_events_after(
    uow: UnitOfWork,
    restaurant_id: int,
    after: int,
    limit: int,
    may_receive: MayReceive,
    types: Collection[str] = (),
) -> DevicePage:
    """Up to `limit` events after `after` (of these `types`, if any) that the device may receive on one of their topics.

    The head is read first, and the scan stops at it: `next_after` never passes an event the read
    did not look at. SeqGone when seq `after + 1` is no longer kept (seq has no gaps, so the oldest
    kept one says so) or `after` is beyond the head.
    """
    head = head_seq(uow, restaurant_id)
    if after > head:
        raise SeqGone(f"seq {after} is ahead of the restaurant's latest ({head}): restart from the snapshot")
    if after < head:
        oldest = uow.session.scalar(
            select(func.min(OutboxEvent.seq)).where(col(OutboxEvent.restaurant_id) == restaurant_id)
        )
        if oldest is None or oldest > after + 1:
            raise SeqGone(f"events after seq {after} are no longer kept: restart from the snapshot")
    found: list[dict[str, Any]] = []
    cursor, scanned = after, 0
    while cursor < head and len(found) < limit and scanned < SCAN_LIMIT:
        query = (
            select(col(OutboxEvent.seq), col(OutboxEvent.envelope))
            .where(
                OutboxEvent.restaurant_id == restaurant_id,
                col(OutboxEvent.seq) > cursor,
                col(OutboxEvent.seq) <= head,
                col(OutboxEvent.type).in_(types) if types else true(),
            )
            .order_by(col(OutboxEvent.seq))
            .limit(min(SCAN_BATCH, SCAN_LIMIT - scanned))
        )
        rows = uow.session.execute(query).all()
        if not rows:
            cursor = head  # none of the wanted types up to the head
            break
        for seq, envelope in rows:
            cursor, scanned = seq, scanned + 1
            if any(may_receive(topic) for topic in event_topics(envelope)):
                found.append(envelope)
                if len(found) == limit:
                    break
    return DevicePage(found, cursor, head)


def device_snapshot(uow: UnitOfWork, restaurant_id: int, may_receive: MayReceive) -> DeviceSnapshot:
    """The open orders the device may see on their retained topics, and the seq to read events after.

    The seq is read before the orders, so the orders are at least that new: an event after it that
    the device then reads again is an order version it already has (devices keep the newest).
    """
    seq = head_seq(uow, restaurant_id)
    query = (
        select(Order)
        .where(col(Order.restaurant_id) == restaurant_id, col(Order.status).in_([str(s) for s in OPEN_STATUSES]))
        .order_by(col(Order.id))
    )
    orders = [
        events.order_state(view.order, view.lines)
        for view in (view_of(uow, order) for order in uow.session.scalars(query))
        if view.order.id is not None and may_receive(topics.open_order(restaurant_id, view.order.id))
    ]
    return DeviceSnapshot(seq, orders)
