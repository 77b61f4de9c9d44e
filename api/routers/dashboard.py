"""The browser dashboard: its static files, the public config it starts from, and its initial snapshot.

The pages are plain ES modules served from `api/static/` (package data; no build step, no Node at
run time). MQTT.js is vendored there (`make vendor-mqtt`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from api.deps import StaffScope, UowDep
from api.schemas import (
    DeviceOut,
    MenuItemOut,
    NotificationOut,
    OrderOut,
    device_out,
    item_out,
    notification_out,
    order_out,
)
from core import clock
from core.models import utcnow
from core.services import dashboard

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
WEBSOCKET_PATH = "/mqtt"  # the broker's WebSocket listener path (broker.server.WEBSOCKET_PATH)

# The pages load only their own scripts and styles; MQTT goes to the broker's WebSocket port.
CSP = (
    "default-src 'self'; script-src 'self'; worker-src 'self' blob:; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["dashboard"])


class ClientConfig(BaseModel):
    """What a browser needs before it logs in: where the broker's WebSocket listener is."""

    ws_path: str
    ws_port: int
    wss_port: int | None
    ws_url: str | None = None  # set (`public_ws_url`, e.g. a NATS node's WebSocket): used as it is


class Snapshot(BaseModel):
    """The dashboard's starting picture. `seq` is read first, so every state below is at least as new
    as `seq`: events after it may repeat what the lists already show, and applying them is harmless."""

    restaurant_id: int
    restaurant_name: str
    restaurant_currency: str
    seq: int
    orders: list[OrderOut]
    items: list[MenuItemOut]
    devices: list[DeviceOut]
    notifications: list[NotificationOut]


@router.get("/config")
def read_client_config(request: Request) -> ClientConfig:
    """Public: the MQTT-over-WebSocket port and path of this deployment's broker."""
    settings = request.app.state.settings
    return ClientConfig(
        ws_path=WEBSOCKET_PATH, ws_port=settings.ws_port, wss_port=settings.wss_port, ws_url=settings.public_ws_url
    )


@router.get("/restaurants/{restaurant_id}/dashboard")
def read_dashboard(rid: StaffScope, uow: UowDep) -> Snapshot:
    """Open orders, tracked stock, devices and unread notifications (newest 200), with the seq they are current to."""
    picture = dashboard.snapshot(uow, rid)
    today = clock.local_date(utcnow(), picture.restaurant.timezone)  # each item's `availability`
    return Snapshot(
        restaurant_id=rid,
        restaurant_name=picture.restaurant.name,
        restaurant_currency=picture.restaurant.currency,
        seq=picture.seq,
        orders=[order_out(view) for view in picture.orders],
        items=[item_out(item, today) for item in picture.items],
        devices=[device_out(device) for device in picture.devices],
        notifications=[notification_out(note) for note in picture.notifications],
    )


def _page(name: str):
    path = STATIC_DIR / name

    def serve() -> FileResponse:
        return FileResponse(path, media_type="text/html", headers=PAGE_HEADERS)

    return serve


def mount(app: FastAPI, api_prefix: str) -> None:
    """The dashboard at `/`, the debugging page at `/debug.html`, assets under `/static/`."""
    app.include_router(router, prefix=api_prefix)
    app.add_api_route("/", _page("index.html"), methods=["GET"], include_in_schema=False)
    app.add_api_route("/debug.html", _page("debug.html"), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
