"""A device asks why the broker refuses it: MQTT 3.1.1's CONNACK has no room for a reason, this answer has.

The agents (devices/refusal.py) call it with their broker token before connecting and after a refused
CONNACK, and print the reason with what to do instead of retrying in a loop.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel

from api.deps import UowDep, bearer
from api.schemas import UtcDatetime
from core.services import devices

router = APIRouter(prefix="/devices/me", tags=["device-status"])

# a refused token's reason → the answer's status: the credential is bad (401), it is not a device's (403),
# or it names a device the bus does not have there (404)
STATUS_OF = {"wrong_role": status.HTTP_403_FORBIDDEN, "unknown_device": status.HTTP_404_NOT_FOUND}


class DeviceStatusOut(BaseModel):
    device_id: str
    restaurant_id: int
    role: str
    station: str | None
    registered: bool  # False: a token `orderbus token` minted for an unregistered subject
    presence: str | None
    expires_at: UtcDatetime


class RefusedOut(BaseModel):
    reason: str  # expired | revoked | replaced | wrong_role | unknown_device | bad_signature | … | missing_token
    detail: str
    at: UtcDatetime | None = None  # when it was revoked, or when it expired


@router.get(
    "/status",
    response_model=DeviceStatusOut,
    responses={
        401: {"model": RefusedOut, "description": "the broker refuses this token: `reason` says why"},
        403: {"model": RefusedOut, "description": "not a device's token (`wrong_role`)"},
        404: {"model": RefusedOut, "description": "no such device in the token's restaurant (`unknown_device`)"},
    },
)
def device_status(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    uow: UowDep,
) -> DeviceStatusOut | JSONResponse:
    """Whether the broker accepts the calling device's token (its bearer token), and if not, why."""
    if credentials is None:
        return _refused("missing_token", "no bearer token: send the device's broker token")
    verdict = devices.token_status(uow, request.app.state.tokens, credentials.credentials)
    if verdict.reason is not None:
        return _refused(verdict.reason, verdict.detail, verdict.at)
    claims: dict[str, Any] = verdict.claims or {}
    assert verdict.at is not None  # an accepted token's expiry
    return DeviceStatusOut(
        device_id=claims["sub"],
        restaurant_id=claims["rid"],
        role=claims["role"],
        station=claims.get("station"),
        registered=verdict.device is not None,
        presence=verdict.device.presence if verdict.device is not None else None,
        expires_at=verdict.at,
    )


def _refused(reason: str, detail: str, at: datetime | None = None) -> JSONResponse:
    body = RefusedOut(reason=reason, detail=detail, at=at).model_dump(mode="json")
    code = STATUS_OF.get(reason, status.HTTP_401_UNAUTHORIZED)
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return JSONResponse(status_code=code, content=body, headers=headers)
