from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Paging, StaffScope, UowDep
from api.schemas import NotificationOut, Page, notification_out
from core.commands import Id
from core.services import notifications

router = APIRouter(prefix="/restaurants/{restaurant_id}/notifications", tags=["notifications"])


@router.get("")
def list_notifications(rid: StaffScope, uow: UowDep, window: Paging, unread: bool = False) -> Page[NotificationOut]:
    """Newest first, dismissed ones left out; only the unread ones when `unread` is true."""
    found = notifications.list_notifications(uow, rid, unread, window)
    return Page(data=[notification_out(note) for note in found.rows], count=found.count)


@router.post("/{notification_id}/read")
def mark_notification_read(rid: StaffScope, notification_id: Id, uow: UowDep) -> NotificationOut:
    """Read on every dashboard of the restaurant (a `notification_updated` event)."""
    return notification_out(notifications.mark_read(uow, rid, notification_id))


@router.post("/{notification_id}/dismiss")
def dismiss_notification(rid: StaffScope, notification_id: Id, uow: UowDep) -> NotificationOut:
    """Out of every dashboard's list, and read; dismissing it again changes nothing."""
    return notification_out(notifications.dismiss(uow, rid, notification_id))


class MarkedRead(BaseModel):
    marked: int


@router.post("/read-all")
def mark_all_notifications_read(
    rid: StaffScope, uow: UowDep, up_to: Annotated[Id | None, Query()] = None
) -> MarkedRead:
    """Every unread notification, or those up to id `up_to` (the newest on the screen, so one that
    arrived meanwhile stays unread). Says how many it marked."""
    return MarkedRead(marked=notifications.mark_all_read(uow, rid, up_to))


class Dismissed(BaseModel):
    dismissed: int


@router.post("/dismiss-read")
def dismiss_read_notifications(rid: StaffScope, uow: UowDep, up_to: Annotated[Id | None, Query()] = None) -> Dismissed:
    """Dismiss every read notification still listed (up to id `up_to` when given). Says how many."""
    return Dismissed(dismissed=notifications.dismiss_read(uow, rid, up_to))
