"""Notifications: what staff should see (low stock, a ticket that did not print, a silent scale)."""

from __future__ import annotations

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
