"""Notifications: what staff should see (low stock, a ticket that did not print, a silent scale)."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from core import events
from core.domain import NotFound
from core.locking import locked
from core.models import Notification
from core.paging import Page, Window, page
from core.unit_of_work import UnitOfWork


def notify(uow: UnitOfWork, restaurant_id: int, *, kind: str, title: str, body: str = "") -> Notification:
    note = Notification(restaurant_id=restaurant_id, kind=kind, title=title, body=body)
    uow.session.add(note)
    uow.session.flush()
    uow.emit(restaurant_id, events.notification(note))
    return note


def list_notifications(uow: UnitOfWork, restaurant_id: int, unread: bool, window: Window) -> Page[Notification]:
    """Newest first."""
    query = select(Notification).where(Notification.restaurant_id == restaurant_id)
    if unread:
        query = query.where(Notification.read == False)  # noqa: E712
    return page(uow, query.order_by(col(Notification.id).desc()), window)


def mark_read(uow: UnitOfWork, restaurant_id: int, notification_id: int) -> Notification:
    note = locked(uow.session, Notification, notification_id)  # two at once: one write, same outcome
    if note is None or note.restaurant_id != restaurant_id:
        raise NotFound(f"notification {notification_id} not found")
    note.read = True
    uow.session.add(note)
    uow.session.flush()
    return note


def mark_all_read(uow: UnitOfWork, restaurant_id: int, up_to: int | None = None) -> int:
    """Every unread notification up to id `up_to` (the newest the screen showed; all when None): one
    that came after the click stays unread. Returns how many it marked."""
    notes = _unread_locked(uow, restaurant_id, *([col(Notification.id) <= up_to] if up_to is not None else []))
    for note in notes:
        note.read = True
        uow.session.add(note)
    uow.session.flush()
    return len(notes)


def resolve(uow: UnitOfWork, restaurant_id: int, *, kinds: list[str], titles: list[str]) -> int:
    """Mark read the unread notifications of a problem that is gone (a ticket printed after all), each
    with its event, so every dashboard clears it. Returns how many."""
    notes = _unread_locked(uow, restaurant_id, col(Notification.kind).in_(kinds), col(Notification.title).in_(titles))
    for note in notes:
        note.read = True
        uow.session.add(note)
    uow.session.flush()
    for note in notes:  # after every row is locked: `emit` takes the restaurant row (core.locking)
        uow.emit(restaurant_id, events.notification(note))
    return len(notes)


def _unread_locked(uow: UnitOfWork, restaurant_id: int, *conditions: Any) -> list[Notification]:
    """Unread notifications matching `conditions`, locked in ascending id (the locking rule's order),
    so two markings at once (a click and a late print) wait for each other instead of deadlocking."""
    query = (
        select(Notification)
        .where(Notification.restaurant_id == restaurant_id, Notification.read == False, *conditions)  # noqa: E712
        .order_by(col(Notification.id))
        .with_for_update()
    )
    return list(uow.session.exec(query.execution_options(populate_existing=True)))
