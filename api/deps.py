"""FastAPI dependencies: the unit of work, the caller, and the restaurant scope check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.commands import DeviceId, Id
from core.paging import Window
from core.services import devices, users
from core.sizes import MAX_ID
from core.tokens import Audience, TokenError, TokenService
from core.topics import DEVICE_ROLES
from core.unit_of_work import UnitOfWork

bearer = HTTPBearer(auto_error=False)

MAX_PAGE = 500  # rows a list answers at most at once; past that, page with `skip`

# The topic ACL as the API sees it: a token's claims → may it receive a message on this topic?
# The composition root builds it from the broker's policy, so REST and MQTT agree on what a device sees.
DeviceGrants = Callable[[dict[str, Any]], Callable[[str], bool]]


def get_uow(request: Request) -> Iterator[UnitOfWork]:
    """The request's one transaction: committed when the endpoint returns, rolled back when it raises.

    The endpoints never commit; this does, once. It is a function-scoped dependency so that the
    commit runs before the response is sent: a commit that fails answers 500, never a 2xx for a
    change that did not happen.
    """
    with UnitOfWork(request.app.state.engine, request.app.state.wake_relay) as uow:
        yield uow
        uow.commit()


UowDep = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


@dataclass(frozen=True)
class Caller:
    sub: str
    role: str
    restaurant_id: int | None
    claims: dict[str, Any]


def bearer_claims(
    request: Request, credentials: HTTPAuthorizationCredentials | None, audience: Audience
) -> dict[str, Any]:
    """The verified claims of the request's bearer token for `audience`, or 401."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    tokens: TokenService = request.app.state.tokens
    try:
        return tokens.verify(credentials.credentials, audience=audience)
    except TokenError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), {"WWW-Authenticate": "Bearer"}) from exc


def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)], uow: UowDep
) -> Caller:
    """The caller of a valid API token; 401 also for a login's token whose user was removed, changed role
    or restaurant, or changed their password since (core.services.users.session_is_current)."""
    claims = bearer_claims(request, credentials, "api")
    if not users.session_is_current(uow, claims):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this session has ended (account removed or password changed); log in again",
            {"WWW-Authenticate": "Bearer"},
        )
    return Caller(sub=claims["sub"], role=claims["role"], restaurant_id=claims.get("rid"), claims=claims)


CurrentUser = Annotated[Caller, Depends(get_caller)]


def restaurant_scope(*allowed_roles: str):
    """A dependency giving the path's restaurant id once the caller may act on it in one of these roles."""

    def check(caller: CurrentUser, restaurant_id: Id) -> int:
        if caller.role != "super_admin" and caller.restaurant_id != restaurant_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "not your restaurant")
        if caller.role not in allowed_roles and caller.role != "super_admin":
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {caller.role} may not do this")
        return restaurant_id

    return check


StaffScope = Annotated[int, Depends(restaurant_scope("admin", "staff"))]
AdminScope = Annotated[int, Depends(restaurant_scope("admin"))]


def window(
    skip: Annotated[int, Query(ge=0, le=MAX_ID, description="rows to leave out from the start")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows to answer at most")] = 100,
) -> Window:
    """Which page of a list to answer: every list endpoint takes the same two parameters."""
    return Window(skip, limit)


Paging = Annotated[Window, Depends(window)]


@dataclass(frozen=True)
class DeviceCaller:
    """A device calling with its own broker token, on its own path: what its topic ACL lets it receive."""

    restaurant_id: int
    device_id: str
    may_receive: Callable[[str], bool]


def get_device(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    restaurant_id: Id,
    device_id: DeviceId,
    uow: UowDep,
) -> DeviceCaller:
    """The device's MQTT token, checked as the broker checks it at CONNECT, and bound to the path.

    401 for no token, a bad or expired one, an API token, or one the broker would refuse (the device
    is revoked or the token was re-issued since); 403 for a token of another device or restaurant, or
    one that is not a device's.
    """
    claims = bearer_claims(request, credentials, "mqtt")
    if claims["role"] not in DEVICE_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {claims['role']} is not a device")
    if claims["sub"] != device_id or claims.get("rid") != restaurant_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not this device's token")
    if devices.refuses_token(uow, claims):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token revoked or replaced", {"WWW-Authenticate": "Bearer"})
    grants: DeviceGrants | None = request.app.state.device_grants
    if grants is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no topic ACL policy is configured")
    return DeviceCaller(restaurant_id, device_id, grants(claims))


CurrentDevice = Annotated[DeviceCaller, Depends(get_device)]
