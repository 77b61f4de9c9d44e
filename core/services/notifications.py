"""Notifications: what staff should see (low stock, a ticket that did not print, a silent scale).

They are shared by every dashboard of the restaurant: marking one read, marking all read and
dismissing are events (`notification_updated`, by id), so a notification read on the counter's
screen is read on the kitchen's too. Dismissed ones leave the list (they are read as well); read
ones are deleted `retention` after they were read (`prune`, run by the bridge's sweeper).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select

from core import events
from core.domain import NotFound
from core.events import NOTIFICATION_IDS_PER_EVENT, NotificationChange
from core.locking import locked
from core.models import Notification, utcnow
from core.paging import Page, Window, page
from core.unit_of_work import UnitOfWork


def notify(uow: UnitOfWork, restaurant_id: int, *, kind: str, title: str, body: str = "") -> Notification:
    note = Notification(restaurant_id=restaurant_id, kind=kind, title=title, body=body)
    uow.session.add(note)
    uow.session.flush()
    uow.emit(restaurant_id, events.notification(note))
    return note


def list_notifications(uow: UnitOfWork, restaurant_id: int, unread: bool, window: Window) -> Page[Notification]:
    """Newest first; dismissed ones are left out."""
    query = select(Notification).where(
        Notification.restaurant_id == restaurant_id,
        col(Notification.dismissed_at).is_(None),
    )
    if unread:
        query = query.where(Notification.read == False)  # noqa: E712
    return page(uow, query.order_by(col(Notification.id).desc()), window)


def mark_read(uow: UnitOfWork, restaurant_id: int, notification_id: int) -> Notification:
    """Mark one read, with its event; one read already is left as it is (no event: nothing changed)."""
    note = _one_locked(uow, restaurant_id, notification_id)  # two at once: one write, same outcome
    if not note.read:
        _read(note, utcnow())
        uow.session.add(note)
        uow.session.flush()
        _announce(uow, restaurant_id, "read", [note])
    return note


def mark_all_read(uow: UnitOfWork, restaurant_id: int, up_to: int | None = None) -> int:
    """Every unread notification up to id `up_to` (the newest the screen showed; all when None): one
    that came after the click stays unread. Returns how many it marked."""
    notes = _unread_locked(uow, restaurant_id, *([col(Notification.id) <= up_to] if up_to is not None else []))
    now = utcnow()
    for note in notes:
        _read(note, now)
        uow.session.add(note)
    uow.session.flush()
    _announce(uow, restaurant_id, "read", notes)
    return len(notes)


def dismiss(uow: UnitOfWork, restaurant_id: int, notification_id: int) -> Notification:
    """Take one out of every dashboard's list (and read it); dismissing it again changes nothing."""
    note = _one_locked(uow, restaurant_id, notification_id)
    if note.dismissed_at is None:
        now = utcnow()
        _read(note, now)
        note.dismissed_at = now
        uow.session.add(note)
        uow.session.flush()
        _announce(uow, restaurant_id, "dismissed", [note])
    return note


def dismiss_read(uow: UnitOfWork, restaurant_id: int, up_to: int | None = None) -> int:
    """Dismiss every read notification still listed, up to id `up_to` when given. Returns how many."""
    conditions = [Notification.read == True, col(Notification.dismissed_at).is_(None)]  # noqa: E712
    if up_to is not None:
        conditions.append(col(Notification.id) <= up_to)
    notes = _locked_where(uow, restaurant_id, *conditions)
    now = utcnow()
    for note in notes:
        note.dismissed_at = now
        uow.session.add(note)
    uow.session.flush()
    _announce(uow, restaurant_id, "dismissed", notes)
    return len(notes)


def resolve(uow: UnitOfWork, restaurant_id: int, *, kinds: list[str], titles: list[str]) -> int:
    """Mark read the unread notifications of a problem that is gone (a ticket printed after all), each
    with its event, so every dashboard clears it. Returns how many."""
    notes = _unread_locked(uow, restaurant_id, col(Notification.kind).in_(kinds), col(Notification.title).in_(titles))
    now = utcnow()
    for note in notes:
        _read(note, now)
        uow.session.add(note)
    uow.session.flush()
    for note in notes:  # after every row is locked: `emit` takes the restaurant row (core.locking)
        uow.emit(restaurant_id, events.notification(note))
    return len(notes)


def prune(uow: UnitOfWork, read_before: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` notifications read before `read_before` (of any restaurant); unread
    ones stay, however old. No event: a dashboard lists the unread ones, and these are long read."""
    ids = list(
        uow.session.scalars(
            select(col(Notification.id))
            .where(Notification.read == True, col(Notification.read_at) < read_before)  # noqa: E712
            .order_by(col(Notification.id))
            .limit(batch_size)
        )
    )
    if ids:
        uow.session.execute(delete(Notification).where(col(Notification.id).in_(ids)))
    return len(ids)


def _read(note: Notification, now: datetime) -> None:
    note.read = True
    note.read_at = note.read_at or now


def _announce(uow: UnitOfWork, restaurant_id: int, action: NotificationChange, notes: list[Notification]) -> None:
    """One `notification_updated` event per `NOTIFICATION_IDS_PER_EVENT` ids (after every row is locked)."""
    ids = [note.id for note in notes if note.id is not None]
    now = utcnow()
    for start in range(0, len(ids), NOTIFICATION_IDS_PER_EVENT):
        uow.emit(
            restaurant_id, events.notification_updated(action, ids[start : start + NOTIFICATION_IDS_PER_EVENT], now)
        )


def _one_locked(uow: UnitOfWork, restaurant_id: int, notification_id: int) -> Notification:
    note = locked(uow.session, Notification, notification_id)
    if note is None or note.restaurant_id != restaurant_id:
        raise NotFound(f"notification {notification_id} not found")
    return note


def _unread_locked(uow: UnitOfWork, restaurant_id: int, *conditions: Any) -> list[Notification]:
    return _locked_where(uow, restaurant_id, Notification.read == False, *conditions)  # noqa: E712


def _locked_where(uow: UnitOfWork, restaurant_id: int, *conditions: Any) -> list[Notification]:
    """Notifications matching `conditions`, locked in ascending id (the locking rule's order),
    so two markings at once (a click and a late print) wait for each other instead of deadlocking."""
    query = (
        select(Notification)
        .where(Notification.restaurant_id == restaurant_id, *conditions)
        .order_by(col(Notification.id))
        .with_for_update()
    )
    return list(uow.session.exec(query.execution_options(populate_existing=True)))
