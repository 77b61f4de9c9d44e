"""Login (API token) and the exchange of an API token for a short-lived MQTT token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from api.deps import CurrentUser, UowDep
from api.login_limit import LoginLimit
from api.openapi import errors
from api.schemas import LoginIn, MqttTokenOut, TokenOut
from core.services import users

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", responses=errors(401, 429, why=None))
def login(body: LoginIn, uow: UowDep, request: Request) -> TokenOut:
    """An API token for a super_admin, admin or staff member. Failed logins are limited per account and
    per address (api/login_limit.py): past the limit, 429 with Retry-After, before the password is checked."""
    limit: LoginLimit = request.app.state.login_limit
    address = request.client.host if request.client else "unknown"
    limit.check(body.email, address)
    user = users.authenticate(uow, body.email, body.password)
    if user is None:
        limit.failed(body.email, address)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong email or password")
    limit.succeeded(body.email)
    settings = request.app.state.settings
    token = request.app.state.tokens.issue(
        sub=f"{users.USER_SUB_PREFIX}{user.id}",
        role=user.role,
        rid=user.restaurant_id,
        audience="api",
        ttl_seconds=settings.api_token_ttl_seconds,
        extra=users.session_claims(user),
    )
    return TokenOut(
        access_token=token,
        expires_in=settings.api_token_ttl_seconds,
        restaurant_id=user.restaurant_id,
        role=user.role,
    )


@router.post("/mqtt-token")
def issue_mqtt_token(caller: CurrentUser, request: Request) -> MqttTokenOut:
    """A broker token for the same user; connect with client id `<sub>` or `<sub>:<tab id>`."""
    ttl = request.app.state.settings.mqtt_token_ttl_seconds
    token = request.app.state.tokens.issue(
        sub=caller.sub, role=caller.role, rid=caller.restaurant_id, audience="mqtt", ttl_seconds=ttl
    )
    return MqttTokenOut(token=token, client_id_prefix=caller.sub, expires_in=ttl, restaurant_id=caller.restaurant_id)


@router.get("/me")
def read_token_claims(caller: CurrentUser) -> dict:
    """Who the bearer token says the caller is (its subject, role and restaurant); the account is `/users/me`."""
    return {"sub": caller.sub, "role": caller.role, "restaurant_id": caller.restaurant_id}
