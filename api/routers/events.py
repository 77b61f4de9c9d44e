from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import StaffScope, UowDep
from core.services import outbox
from core.sizes import MAX_ID

router = APIRouter(prefix="/restaurants/{restaurant_id}/events", tags=["events"])


class EventsResponse(JSONResponse):
    """UTF-8 JSON; a stored event holding a lone surrogate (not encodable in UTF-8) is written with
    ASCII escapes instead, so one such event never makes the catch-up of its restaurant fail."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode()


class Gone(BaseModel):
    """Events after the requested seq were pruned: load `snapshot`, then fetch events after its seq."""

    detail: str
    pruned_through: int
    snapshot: str


@router.get("", response_model=list[dict], response_class=EventsResponse, responses={410: {"model": Gone}})
def read_events(
    rid: StaffScope,
    uow: UowDep,
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict] | JSONResponse:
    """Committed events with seq > `after`, in seq order: the catch-up and polling endpoint.

    Events are listed once committed, whether or not the relay has published them yet; one marked
    `"mqtt_withheld": true` was dead-lettered (no MQTT copy went out). 410 when events after `after`
    were pruned after the retention period: the body names the snapshot to start again from.
    """
    try:
        return outbox.events_after(uow, rid, after, limit)
    except outbox.Pruned as gone:
        snapshot = str(request.url_for("read_dashboard", restaurant_id=rid).path)
        detail = f"events up to seq {gone.pruned_through} were pruned; load the snapshot, then the events after its seq"
        body = Gone(detail=detail, pruned_through=gone.pruned_through, snapshot=snapshot)
        return JSONResponse(status_code=410, content=body.model_dump())
