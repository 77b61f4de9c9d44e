from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import StaffScope, UowDep
from core.domain import NotFound
from core.models import Notification
from core.schemas import NotificationOut

router = APIRouter(prefix="/restaurants/{rid}/notifications", tags=["notifications"])


@router.get("")
def list_notifications(
    rid: StaffScope, uow: UowDep, unread: bool = False, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[NotificationOut]:
    """Always a JSON array, newest first (the old design sometimes answered an object)."""
    query = select(Notification).where(Notification.restaurant_id == rid)
    if unread:
        query = query.where(Notification.read == False)  # noqa: E712
    rows = uow.session.exec(query.order_by(col(Notification.id).desc()).limit(limit))
    return [NotificationOut.model_validate(row, from_attributes=True) for row in rows]


@router.post("/{notification_id}/read")
def mark_read(rid: StaffScope, notification_id: int, uow: UowDep) -> NotificationOut:
    note = uow.session.get(Notification, notification_id)
    if note is None or note.restaurant_id != rid:
        raise NotFound(f"notification {notification_id} not found")
    note.read = True
    uow.session.add(note)
    uow.commit()
    return NotificationOut.model_validate(note, from_attributes=True)
