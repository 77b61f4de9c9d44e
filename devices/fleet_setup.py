"""Seeding a simulated chain through the real API: restaurants, stations, menus, devices and their tokens."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from core.tokens import TokenService

STATIONS = ("grill", "fry", "salad", "pastry", "bar", "wok", "cold", "pizza")
UNIT_GRAMS = 250.0
START_UNITS = 40


class SetupFailed(RuntimeError):
    """The bus refused a seeding request (wrong data directory's key, say)."""


@dataclass(frozen=True)
class FleetShape:
    restaurants: int
    printers: int
    tablets: int
    scales: int
    dashboards: int


@dataclass
class Site:
    """One simulated restaurant and the credentials of its devices."""

    rid: int
    stations: list[str]
    dishes: dict[str, list[int]] = field(default_factory=dict)  # station → untracked menu item ids
    printers: dict[str, str] = field(default_factory=dict)  # device id → token
    printer_station: dict[str, str] = field(default_factory=dict)
    tablets: dict[str, str] = field(default_factory=dict)
    scales: dict[str, tuple[str, int]] = field(default_factory=dict)  # device id → (token, item id)
    dashboards: dict[str, str] = field(default_factory=dict)  # client id → admin MQTT token


def stations_for(printers: int) -> list[str]:
    return [STATIONS[i] if i < len(STATIONS) else f"station{i}" for i in range(max(printers, 1))]


class FleetSetup:
    """Everything through HTTP with a super_admin token, so the bus sees what a real operator would do."""

    def __init__(self, http: httpx.AsyncClient, tokens: TokenService, run_id: str, concurrency: int = 4) -> None:
        self._http = http
        self._tokens = tokens
        self._run = run_id
        self._limit = asyncio.Semaphore(concurrency)

    async def build(self, shape: FleetShape) -> list[Site]:
        return list(await asyncio.gather(*(self._site(shape, index) for index in range(shape.restaurants))))

    async def _post(self, path: str, body: dict) -> dict:
        async with self._limit:
            response = await self._http.post(path, json=body)
        if response.status_code != 201:
            raise SetupFailed(f"POST {path} → {response.status_code}: {response.text[:300]}")
        return response.json()

    async def _site(self, shape: FleetShape, index: int) -> Site:
        rid = (await self._post("/restaurants", {"name": f"sim {self._run} #{index + 1}"}))["id"]
        base = f"/restaurants/{rid}"
        site = Site(rid, stations_for(shape.printers))
        menu = await self._post(f"{base}/menus", {"name": "Dinner"})
        for station in site.stations:
            category = await self._post(f"{base}/categories", {"name": station.title(), "station": station})
            site.dishes[station] = [
                (await self._post(f"{base}/menu-items", self._dish(menu["id"], category["id"], f"{station} {n}")))["id"]
                for n in range(2)
            ]
        for n, station in enumerate(site.stations[: shape.printers]):
            device_id = f"sim{self._run}-r{rid}-printer{n}"
            site.printers[device_id] = await self._device(base, device_id, "printer", station=station)
            site.printer_station[device_id] = station
        for n in range(shape.tablets):
            device_id = f"sim{self._run}-r{rid}-tablet{n}"
            site.tablets[device_id] = await self._device(base, device_id, "tablet")
        for n in range(shape.scales):
            item = await self._post(f"{base}/menu-items", self._stocked(menu["id"], f"stock {n}"))
            device_id = f"sim{self._run}-r{rid}-scale{n}"
            site.scales[device_id] = (await self._device(base, device_id, "scale", item_id=item["id"]), item["id"])
        for n in range(shape.dashboards):
            client_id = f"sim{self._run}-r{rid}-dash{n}"
            site.dashboards[client_id] = self._tokens.issue(
                sub=client_id, role="admin", rid=rid, audience="mqtt", ttl_seconds=4 * 3600
            )
        return site

    async def _device(self, base: str, device_id: str, kind: str, **fields: object) -> str:
        body = {"id": device_id, "kind": kind, "name": device_id, "ttl_days": 1, **fields}
        return (await self._post(f"{base}/devices", body))["token"]

    @staticmethod
    def _dish(menu_id: int, category_id: int, name: str) -> dict:
        return {"menu_id": menu_id, "category_id": category_id, "name": name, "price_cents": 1200}

    @staticmethod
    def _stocked(menu_id: int, name: str) -> dict:
        return {
            "menu_id": menu_id,
            "name": name,
            "price_cents": 900,
            "enable_stock_tracking": True,
            "stock_quantity": START_UNITS,
            "low_stock_threshold": 5,
            "low_stock_clear_level": 8,
            "unit_weight_grams": UNIT_GRAMS,
        }
