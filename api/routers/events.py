from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StaffScope, UowDep
from core.services import outbox
from core.sizes import MAX_ID

router = APIRouter(prefix="/restaurants/{rid}/events", tags=["events"])


@router.get("")
def events_after(
    rid: StaffScope,
    uow: UowDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    """Committed events with seq > `after`, in seq order: the catch-up and polling endpoint.

    Events are listed once committed, whether or not the relay has published them yet.
    """
    return outbox.events_after(uow, rid, after, limit)
