"""Demo data, created once through the service layer so its events and retained state are real."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from core.commands import CategoryIn, MenuIn, MenuItemIn
from core.models import Category, Device, Menu, MenuItem, Restaurant, User
from core.passwords import hash_password
from core.services import menu
from core.unit_of_work import UnitOfWork

DEMO_RESTAURANT = "Demo Bistro"
DEMO_EMAIL = "admin@demo.orderbus.dev"
CREDENTIALS_FILE = "demo-credentials.json"


@dataclass(frozen=True)
class DemoDevice:
    id: str
    kind: str
    station: str | None
    item_id: int | None = None  # a scale's item
    grams: float | None = None  # what a scale should weigh now: its item's stock, a whole count (plus the tare)


@dataclass(frozen=True)
class DemoInfo:
    restaurant_id: int
    email: str
    password: str
    devices: list[DemoDevice]


def _known_password(data_dir: Path) -> str | None:
    path = data_dir / CREDENTIALS_FILE
    return json.loads(path.read_text())["password"] if path.exists() else None


def _write_credentials(data_dir: Path, password: str) -> None:
    """The demo admin's credentials (mode 0600), written whole, once the admin can log in with them:
    a script that polls for this file and then logs in must not spend the failed-login limit
    (api/login_limit.py) on an admin that is still being seeded."""
    path = data_dir / CREDENTIALS_FILE
    scratch = path.with_name(f".{CREDENTIALS_FILE}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"email": DEMO_EMAIL, "password": password}, handle)
    os.replace(scratch, path)


def ensure_demo(engine: Engine, data_dir: Path, wake_relay=None) -> DemoInfo:
    """The demo restaurant, seeded once; its admin's password is generated once and kept in the data directory."""
    known = _known_password(data_dir)
    password = known or secrets.token_urlsafe(12)
    with UnitOfWork(engine, wake_relay) as uow:
        restaurant = uow.session.exec(select(Restaurant).where(Restaurant.name == DEMO_RESTAURANT)).first()
        if restaurant is None:
            restaurant = _seed(uow, password)
            uow.commit()  # the seeding's one transaction: all of it, with its events, or none
        elif known is None:  # seeded, but the file was lost (a crash before it was written): a new password
            admin = uow.session.exec(select(User).where(User.email == DEMO_EMAIL)).first()
            if admin is not None:
                admin.password_hash = hash_password(password)
                uow.commit()
        rid = restaurant.id
        assert rid is not None
        devices = uow.session.exec(select(Device).where(Device.restaurant_id == rid).order_by(Device.id)).all()
        info = DemoInfo(rid, DEMO_EMAIL, password, [_demo_device(uow, device) for device in devices])
    if known is None:
        _write_credentials(data_dir, password)
    return info


def _demo_device(uow: UnitOfWork, device: Device) -> DemoDevice:
    """A scale's starting weight is its item's current stock in grams: its first reading is then a whole count
    the bus takes (the load cell's own default, 5000 g, is 41.67 patties: refused as not whole)."""
    grams = None
    item = uow.session.get(MenuItem, device.item_id) if device.item_id is not None else None
    if item is not None and item.unit_weight_grams:
        grams = round(item.stock_quantity * item.unit_weight_grams + device.tare_grams, 1)
    return DemoDevice(device.id, device.kind, device.station, device.item_id, grams)


def _seed(uow: UnitOfWork, password: str) -> Restaurant:
    """Everything of the demo restaurant, in the caller's transaction."""
    restaurant = Restaurant(name=DEMO_RESTAURANT)
    uow.session.add(restaurant)
    uow.session.flush()
    rid = restaurant.id
    assert rid is not None
    uow.session.add(
        User(
            restaurant_id=rid, email=DEMO_EMAIL, name="Demo Admin", role="admin", password_hash=hash_password(password)
        )
    )
    grill = menu.create_row(uow, Category, rid, CategoryIn(name="Burgers", position=1, station="grill"))
    bar = menu.create_row(uow, Category, rid, CategoryIn(name="Drinks", position=2, station="bar"))
    dinner = menu.create_row(uow, Menu, rid, MenuIn(name="Dinner"))
    items = {}
    for name, category, price, stock, threshold, grams in [
        ("Classic Burger", grill, 1250, 40, 10, 120.0),  # patties on the patty scale
        ("Veggie Burger", grill, 1150, 12, 5, None),
        ("Fries", grill, 450, 0, None, None),
        ("Lemonade", bar, 350, 30, 8, None),
        ("Espresso", bar, 300, 0, None, None),
    ]:
        items[name] = menu.create_item(
            uow,
            rid,
            MenuItemIn(
                menu_id=dinner.id,
                category_id=category.id,
                name=name,
                price_cents=price,
                enable_stock_tracking=stock > 0,
                stock_quantity=stock,
                low_stock_threshold=threshold,
                low_stock_clear_level=threshold + 3 if threshold is not None else None,
                unit_weight_grams=grams,
            ),
        )
    uow.session.add_all(
        [
            Device(id="printer-grill-1", restaurant_id=rid, kind="printer", name="Grill printer", station="grill"),
            Device(id="printer-bar-1", restaurant_id=rid, kind="printer", name="Bar printer", station="bar"),
            Device(id="kds-kitchen-1", restaurant_id=rid, kind="tablet", name="Kitchen display"),
            Device(
                id="scale-patty-1",
                restaurant_id=rid,
                kind="scale",
                name="Patty scale",
                item_id=items["Classic Burger"].id,
            ),
        ]
    )
    return restaurant
