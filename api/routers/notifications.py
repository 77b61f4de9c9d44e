from __future__ import annotations

from fastapi import APIRouter

from api.deps import Paging, StaffScope, UowDep
from api.schemas import NotificationOut, Page, notification_out
from core.commands import Id
from core.services import notifications

router = APIRouter(prefix="/restaurants/{restaurant_id}/notifications", tags=["notifications"])


@router.get("")
def list_notifications(rid: StaffScope, uow: UowDep, window: Paging, unread: bool = False) -> Page[NotificationOut]:
    """Newest first; only the unread ones when `unread` is true."""
    found = notifications.list_notifications(uow, rid, unread, window)
    return Page(data=[notification_out(note) for note in found.rows], count=found.count)


@router.post("/{notification_id}/read")
def mark_notification_read(rid: StaffScope, notification_id: Id, uow: UowDep) -> NotificationOut:
    return notification_out(notifications.mark_read(uow, rid, notification_id))
