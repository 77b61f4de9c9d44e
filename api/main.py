"""The FastAPI application, assembled from its routers."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine

from api import db_errors, idempotency, openapi
from api.deps import DeviceGrants
from api.login_limit import LoginLimit
from api.metrics import HttpMetricsMiddleware
from api.routers import (
    auth,
    categories,
    device_events,
    device_status,
    devices,
    events,
    inventory,
    menu_items,
    menus,
    notifications,
    ops,
    ops_clients,
    orders,
    refunds,
    restaurants,
    users,
)
from api.routers.dashboard import mount as mount_dashboard
from config.settings import Settings
from core.domain import DomainError, Forbidden, NotFound, WrongPassword
from core.tokens import TokenService

API_PREFIX = "/api/v1"
_SURROGATE = re.compile("[\ud800-\udfff]")
# a broken rule of the core as HTTP: anything not named here is a conflict with the current state (409)
_DOMAIN_STATUS: dict[type[DomainError], int] = {NotFound: 404, Forbidden: 403, WrongPassword: 400}


def create_app(
    settings: Settings,
    engine: Engine,
    tokens: TokenService,
    wake_relay: Callable[[], None] | None = None,
    device_grants: DeviceGrants | None = None,
) -> FastAPI:
    """`device_grants` is the topic ACL for the devices' catch-up; without it those routes answer 503.

    /docs (Swagger UI) and /redoc load their scripts and styles from this app (fastapi-offline ships
    them), not from a CDN: the docs work on a restaurant's network with no internet.
    """
    app = FastAPIOffline(
        title="orderbus",
        summary="Orders, stock and devices of a restaurant, published live over MQTT.",
        version="0.1.0",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        generate_unique_id_function=openapi.operation_id,
        swagger_ui_parameters={"displayOperationId": True},  # the ids generated clients are named after
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.tokens = tokens
    app.state.wake_relay = wake_relay
    app.state.device_grants = device_grants
    app.state.login_limit = LoginLimit.build(
        settings.login_failures_per_account, settings.login_failures_per_address, settings.login_failure_window_seconds
    )

    api = APIRouter(prefix=API_PREFIX)
    for module in (
        auth,
        restaurants,
        users,
        categories,
        menus,
        menu_items,
        inventory,
        orders,
        refunds,
        notifications,
        events,
        devices,
        device_events,
        device_status,
        ops_clients,
    ):
        api.include_router(module.router)
    app.include_router(api)
    mount_dashboard(app, API_PREFIX)  # the browser dashboard: /, /debug.html, /static/, GET /api/v1/config

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=domain_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(printable(exc.errors()))}, status_code=422)

    idempotency.install(app)  # a retried write with its Idempotency-Key gets the first answer
    db_errors.install(app)  # a database that cannot answer right now: 503 with Retry-After, not 500

    app.include_router(ops.router)  # /healthz, /readyz, /metrics, /api/v1/ops/summary, /ops
    app.add_middleware(HttpMetricsMiddleware)
    openapi.install(app)  # every operation's 401/403/404/409, from its security, path and method
    if settings.cors_origins:  # off by default: no CORS header at all, and a preflight is a 405
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "Idempotent-Replayed"],
            max_age=600,
        )

    return app


def domain_status(exc: DomainError) -> int:
    return next((code for kind, code in _DOMAIN_STATUS.items() if isinstance(exc, kind)), 409)


def printable(value: Any) -> Any:
    """What a 422 echoes of the input, made valid JSON in UTF-8: a lone surrogate or an undecodable byte
    becomes U+FFFD, NaN and infinities their names (they are not JSON numbers)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable(item) for item in value]
    return value
