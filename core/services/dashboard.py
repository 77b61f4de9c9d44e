"""The dashboard's starting picture: one read of everything a screen shows, with the seq it is current to."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select

from core.domain import OPEN_STATUSES, NotFound
from core.models import Device, MenuItem, Notification, Order, Restaurant
from core.paging import EVERYTHING, Window
from core.services import devices, inventory, notifications, orders
from core.services.orders import OrderView
from core.unit_of_work import UnitOfWork

SNAPSHOT_NOTIFICATIONS = Window(0, 200)  # the unread ones: what the screen groups and counts
SNAPSHOT_OPEN_ORDERS = 500


@dataclass(frozen=True)
class Snapshot:
    """`seq` is read first, so every state below is at least as new as `seq`: events after it may
    repeat what the lists already show, and applying them is harmless."""

    restaurant: Restaurant
    seq: int
    orders: list[OrderView]
    items: list[MenuItem]
    devices: list[Device]
    notifications: list[Notification]


def snapshot(uow: UnitOfWork, restaurant_id: int) -> Snapshot:
    restaurant = uow.session.get(Restaurant, restaurant_id)
    if restaurant is None:
        raise NotFound(f"restaurant {restaurant_id} not found")
    seq = restaurant.event_seq
    open_orders = uow.session.exec(
        select(Order)
        .where(Order.restaurant_id == restaurant_id, col(Order.status).in_(OPEN_STATUSES))
        .order_by(col(Order.id))
        .limit(SNAPSHOT_OPEN_ORDERS)
    )
    return Snapshot(
        restaurant=restaurant,
        seq=seq,
        orders=[orders.view_of(uow, order) for order in open_orders],
        items=inventory.list_items(uow, restaurant_id, EVERYTHING, tracked_only=True).rows,
        devices=devices.list_devices(uow, restaurant_id, EVERYTHING).rows,
        notifications=notifications.list_notifications(uow, restaurant_id, True, SNAPSHOT_NOTIFICATIONS).rows,
    )
