from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StaffScope, UowDep
from api.schemas import NotificationOut, notification_out
from core.commands import Id
from core.services import notifications

router = APIRouter(prefix="/restaurants/{rid}/notifications", tags=["notifications"])


@router.get("")
def list_notifications(
    rid: StaffScope, uow: UowDep, unread: bool = False, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[NotificationOut]:
    """Always a JSON array, newest first."""
    return [notification_out(note) for note in notifications.list_notifications(uow, rid, unread, limit)]


@router.post("/{notification_id}/read")
def mark_read(rid: StaffScope, notification_id: Id, uow: UowDep) -> NotificationOut:
    return notification_out(notifications.mark_read(uow, rid, notification_id))
