"""Devices of a restaurant: presence for staff; credentials (create, re-issue, revoke) for admins."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from api.deps import AdminScope, Paging, StaffScope, UowDep
from api.schemas import DeviceCredentialsOut, DeviceOut, DeviceTokenIn, Page, credentials_out, device_out
from core.commands import DeviceId, DeviceIn
from core.services import devices

router = APIRouter(prefix="/restaurants/{restaurant_id}/devices", tags=["devices"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.get("")
def list_devices(rid: StaffScope, uow: UowDep, window: Paging) -> Page[DeviceOut]:
    """Devices with their last known presence and when the bus last heard from them (never their tokens)."""
    found = devices.list_devices(uow, rid, window)
    return Page(data=[device_out(device) for device in found.rows], count=found.count)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_device(
    rid: AdminScope, body: DeviceIn, uow: UowDep, request: Request, response: Response
) -> DeviceCredentialsOut:
    """Register a device and return its broker token: this response is the only time the token is shown.

    The device connects with client id = its id and the token as the MQTT password.
    """
    response.headers.update(NO_STORE)
    return credentials_out(devices.create_device(uow, request.app.state.tokens, rid, body))


@router.post("/{device_id}/token")
def reissue_device_token(
    rid: AdminScope,
    device_id: DeviceId,
    uow: UowDep,
    request: Request,
    response: Response,
    body: DeviceTokenIn | None = None,
) -> DeviceCredentialsOut:
    """A new token for the device, shown once; the broker stops accepting its previous token."""
    response.headers.update(NO_STORE)
    ttl_days = (body or DeviceTokenIn()).ttl_days
    return credentials_out(devices.reissue_token(uow, request.app.state.tokens, rid, device_id, ttl_days))


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_device(rid: AdminScope, device_id: DeviceId, uow: UowDep) -> None:
    """Revoke the device: the broker refuses its tokens from now on. Revoking again is harmless."""
    devices.revoke_device(uow, rid, device_id)
