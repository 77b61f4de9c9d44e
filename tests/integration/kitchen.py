"""Helpers for the KDS tests: a restaurant with a menu, orders placed through the API, a raw tablet."""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import REGISTRY

from core.models import Order
from core.unit_of_work import UnitOfWork
from tests.support import Received, Stack, Subscriber


@dataclass
class Kitchen:
    """One restaurant with a grill category and a burger, and its admin's API client."""

    stack: Stack
    rid: int
    admin: httpx.Client
    item_id: int

    def place(self, table: str = "T4") -> dict[str, Any]:
        body = {
            "items": [{"menu_item_id": self.item_id, "quantity": 2, "modifiers": ["no onion"]}],
            "table_name": table,
        }
        response = self.admin.post(f"/restaurants/{self.rid}/orders", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def order(self, order_id: int) -> tuple[str, int]:
        """(status, version) as the database has it."""
        with UnitOfWork(self.stack.parts.engine) as uow:
            row = uow.session.get(Order, order_id)
            assert row is not None
            return str(row.status), row.version

    def events(self) -> list[dict[str, Any]]:
        client = self.stack.http(self.stack.api_token("reader", "admin", self.rid))
        return client.get(f"/restaurants/{self.rid}/events", params={"after": 0, "limit": 1000}).json()


def open_kitchen(stack: Stack, name: str) -> Kitchen:
    rid = stack.add_restaurant(name, f"{name.lower()}@example.com")
    admin = stack.http(stack.api_token(f"admin-{name.lower()}", "admin", rid))
    category = admin.post(f"/restaurants/{rid}/categories", json={"name": "Burgers", "station": "grill"}).json()
    menu = admin.post(f"/restaurants/{rid}/menus", json={"name": "Dinner"}).json()
    item = admin.post(
        f"/restaurants/{rid}/menu-items",
        json={"menu_id": menu["id"], "category_id": category["id"], "name": "Burger", "price_cents": 1200},
    )
    assert item.status_code == 201, item.text
    return Kitchen(stack, rid, admin, item.json()["id"])


def rejected(reason: str) -> float:
    """orderbus_ingest_rejected_total{reason} in this process (the stack runs in it)."""
    return REGISTRY.get_sample_value("orderbus_ingest_rejected_total", {"reason": reason}) or 0.0


def acl_denied_publishes() -> float:
    return (
        REGISTRY.get_sample_value("orderbus_broker_acl_denials_total", {"action": "publish", "role": "tablet"}) or 0.0
    )


class Tablet:
    """A tablet as raw MQTT: publishes exactly the bytes a test gives it, reads its commands topic."""

    def __init__(self, stack: Stack, subscribers: list[Subscriber], rid: int, device_id: str) -> None:
        self.rid, self.device_id = rid, device_id
        self.client = Subscriber(stack.settings.mqtt_port, device_id, stack.add_device(rid, device_id, "tablet"))
        subscribers.append(self.client)
        assert self.client.connect() == 0
        assert self.client.subscribe(self.topic("commands")) == 1

    def topic(self, leaf: str) -> str:
        return f"restaurant/{self.rid}/devices/{self.device_id}/{leaf}"

    def send(self, body: dict[str, Any] | bytes, topic: str | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.client.publish(topic or self.topic("events"), payload, qos=1).wait_for_publish(10)

    def reply(self, timeout: float = 10.0) -> dict[str, Any]:
        message: Received = self.client.collect(1, timeout)[0]
        assert message.topic == self.topic("commands"), message.topic
        return message.json()

    def no_reply(self, quiet: float = 0.5) -> None:
        try:
            extra = self.client.messages.get(timeout=quiet)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected reply {extra.payload[:200]!r}")
