from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import StaffScope, UowDep
from core.models import OutboxEvent

router = APIRouter(prefix="/restaurants/{rid}/events", tags=["events"])


@router.get("")
def events_after(
    rid: StaffScope,
    uow: UowDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    """Committed events with seq > `after`, in seq order: the catch-up and polling endpoint.

    Events are listed once committed, whether or not the relay has published them yet.
    """
    query = (
        select(OutboxEvent.envelope)
        .where(OutboxEvent.restaurant_id == rid, OutboxEvent.seq > after)
        .order_by(col(OutboxEvent.seq))
        .limit(limit)
    )
    return [dict(envelope) for envelope in uow.session.exec(query)]
