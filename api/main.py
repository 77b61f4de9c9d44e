"""The FastAPI application, assembled from its routers."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from api import db_errors, idempotency
from api.deps import DeviceGrants
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
    orders,
    restaurants,
)
from api.routers.dashboard import mount as mount_dashboard
from config.settings import Settings
from core.domain import DomainError, NotFound
from core.tokens import TokenService

API_PREFIX = "/api/v1"
_SURROGATE = re.compile("[\ud800-\udfff]")


def create_app(
    settings: Settings,
    engine: Engine,
    tokens: TokenService,
    wake_relay: Callable[[], None] | None = None,
    device_grants: DeviceGrants | None = None,
) -> FastAPI:
    """`device_grants` is the topic ACL for the devices' catch-up; without it those routes answer 503."""
    app = FastAPI(
        title="orderbus",
        summary="Orders, stock and devices of a restaurant, published live over MQTT.",
        version="0.1.0",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.tokens = tokens
    app.state.wake_relay = wake_relay
    app.state.device_grants = device_grants

    api = APIRouter(prefix=API_PREFIX)
    for module in (
        auth,
        restaurants,
        categories,
        menus,
        menu_items,
        inventory,
        orders,
        notifications,
        events,
        devices,
        device_events,
        device_status,
    ):
        api.include_router(module.router)
    app.include_router(api)
    mount_dashboard(app, API_PREFIX)  # the browser dashboard: /, /debug.html, /static/, GET /api/v1/config

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404 if isinstance(exc, NotFound) else 409)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(printable(exc.errors()))}, status_code=422)

    idempotency.install(app)  # a retried write with its Idempotency-Key gets the first answer
    db_errors.install(app)  # a database that cannot answer right now: 503 with Retry-After, not 500

    app.include_router(ops.router)  # /healthz, /readyz, /metrics, /api/v1/ops/summary, /ops
    app.add_middleware(HttpMetricsMiddleware)

    return app


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
