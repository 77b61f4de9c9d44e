"""A device's own catch-up: the events and open orders its topic ACL lets it receive, read by seq.

Printers and KDS tablets call these with their broker token when they (re)connect, so a broker
restart, a lost retained message or a dropped queue leaves no screen or printer behind.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import CurrentDevice, UowDep
from core import events
from core.services import outbox
from core.sizes import MAX_ID

router = APIRouter(prefix="/restaurants/{restaurant_id}/devices/{device_id}", tags=["device-catchup"])


EVENT_TYPES = (*outbox.CHANNEL_OF, events.KITCHEN_TICKET, events.DEVICE_UPDATED)
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class DeviceEventsOut(BaseModel):
    events: list[dict[str, Any]]
    next_after: int  # ask again from here; caught up when it equals `head`
    head: int  # the restaurant's latest committed seq


class DeviceSnapshotOut(BaseModel):
    seq: int  # read events after this one next
    open_orders: list[dict[str, Any]]


@router.get(
    "/events",
    response_model=DeviceEventsOut,
    responses={410: {"description": "the cursor cannot be continued: read `snapshot`"}},
)
def read_device_events(
    device: CurrentDevice,
    uow: UowDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    types: Annotated[list[EventType] | None, Query(alias="type", max_length=len(EVENT_TYPES))] = None,
) -> DeviceEventsOut | JSONResponse:
    """Committed events with seq > `after` that this device may receive over MQTT, in seq order;
    only those of the given `type`s when some are given (a printer reads `kitchen_ticket`).

    410 when `after` cannot be continued (its events were pruned, or it is ahead of the bus): read
    the snapshot and go on from its `seq`.
    """
    try:
        page = outbox.device_events_after(uow, device.restaurant_id, after, limit, device.may_receive, types or ())
    except outbox.SeqGone as exc:
        # the same shape as the dashboards' 410 from /events: what happened, and where to start again
        snapshot = f"/api/v1/restaurants/{device.restaurant_id}/devices/{device.device_id}/snapshot"
        return JSONResponse(status_code=status.HTTP_410_GONE, content={"detail": str(exc), "snapshot": snapshot})
    return DeviceEventsOut(events=page.events, next_after=page.next_after, head=page.head)


@router.get("/snapshot")
def read_device_snapshot(device: CurrentDevice, uow: UowDep) -> DeviceSnapshotOut:
    """The open orders this device may see (their state as on `orders/open/{id}`), and the seq to go on from."""
    snapshot = outbox.device_snapshot(uow, device.restaurant_id, device.may_receive)
    return DeviceSnapshotOut(seq=snapshot.seq, open_orders=snapshot.open_orders)
