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
from sqlmodel import col, select

from api.deps import StaffScope, UowDep
from core.domain import OPEN_STATUSES, NotFound
from core.models import Device, Notification, Order, Restaurant
from core.schemas import DeviceOut, MenuItemOut, NotificationOut, OrderOut
from core.services import devices, inventory, orders

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
WEBSOCKET_PATH = "/mqtt"  # the broker's WebSocket listener path (broker.server.WEBSOCKET_PATH)
SNAPSHOT_NOTIFICATIONS = 50
SNAPSHOT_OPEN_ORDERS = 500

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


class Snapshot(BaseModel):
    """The dashboard's starting picture. `seq` is read first, so every state below is at least as new
    as `seq`: events after it may repeat what the lists already show, and applying them is harmless."""

    restaurant_id: int
    restaurant_name: str
    seq: int
    orders: list[OrderOut]
    items: list[MenuItemOut]
    devices: list[DeviceOut]
    notifications: list[NotificationOut]


@router.get("/config")
def client_config(request: Request) -> ClientConfig:
    """Public: the MQTT-over-WebSocket port and path of this deployment's broker."""
    settings = request.app.state.settings
    return ClientConfig(ws_path=WEBSOCKET_PATH, ws_port=settings.ws_port, wss_port=settings.wss_port)


@router.get("/restaurants/{rid}/dashboard")
def snapshot(rid: StaffScope, uow: UowDep) -> Snapshot:
    """Open orders, tracked stock, devices and recent notifications, with the seq they are current to."""
    restaurant = uow.session.get(Restaurant, rid)
    if restaurant is None:
        raise NotFound(f"restaurant {rid} not found")
    seq = restaurant.event_seq
    open_orders = uow.session.exec(
        select(Order)
        .where(Order.restaurant_id == rid, col(Order.status).in_(OPEN_STATUSES))
        .order_by(col(Order.id))
        .limit(SNAPSHOT_OPEN_ORDERS)
    )
    notes = uow.session.exec(
        select(Notification)
        .where(Notification.restaurant_id == rid)
        .order_by(col(Notification.id).desc())
        .limit(SNAPSHOT_NOTIFICATIONS)
    )
    rows = uow.session.exec(select(Device).where(Device.restaurant_id == rid).order_by(col(Device.id)))
    return Snapshot(
        restaurant_id=rid,
        restaurant_name=restaurant.name,
        seq=seq,
        orders=[orders.order_out(uow, order) for order in open_orders],
        items=inventory.list_items(uow, rid, tracked_only=True),
        devices=[devices.device_out(row) for row in rows],
        notifications=[NotificationOut.model_validate(row, from_attributes=True) for row in notes],
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
