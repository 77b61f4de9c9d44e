"""The FastAPI application, assembled from its routers."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from api import idempotency
from api.metrics import HttpMetricsMiddleware
from api.routers import (
    auth,
    categories,
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


def create_app(
    settings: Settings, engine: Engine, tokens: TokenService, wake_relay: Callable[[], None] | None = None
) -> FastAPI:
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

    api = APIRouter(prefix=API_PREFIX)
    for module in (auth, restaurants, categories, menus, menu_items, inventory, orders, notifications, events, devices):
        api.include_router(module.router)
    app.include_router(api)
    mount_dashboard(app, API_PREFIX)  # the browser dashboard: /, /debug.html, /static/, GET /api/v1/config

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404 if isinstance(exc, NotFound) else 409)

    idempotency.install(app)  # a retried write with its Idempotency-Key gets the first answer

    app.include_router(ops.router)  # /healthz, /readyz, /metrics, /api/v1/ops/summary, /ops
    app.add_middleware(HttpMetricsMiddleware)

    return app
