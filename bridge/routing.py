"""Which MQTT messages one committed event becomes. Pure: envelope in, publications out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core import topics
from core.domain import is_open

CHANNEL_TOPICS = {
    "new_order": topics.ORDERS,
    "order_updated": topics.ORDERS,
    "inventory_updated": topics.INVENTORY,
    "low_stock": topics.LOW_STOCK,
    "menu_updated": topics.MENU,
    "category_updated": topics.CATEGORIES,
    "notification": topics.NOTIFICATIONS,
    "notification_updated": topics.NOTIFICATIONS,
}


@dataclass(frozen=True)
class Publication:
    topic: str
    payload: bytes
    retain: bool = False


def encode(envelope: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: a non-ASCII character costs its 2-4 UTF-8 bytes, not a 6-12 byte `\\u` escape."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def packet_size(publication: Publication) -> int:
    """Bytes of the QoS 1 PUBLISH packet carrying `publication` (MQTT 3.1.1 §3.3): what a broker's
    packet limit is checked against."""
    remaining = 2 + len(publication.topic.encode()) + 2 + len(publication.payload)  # topic, packet id, payload
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining


def publications(envelope: Mapping[str, Any]) -> list[Publication]:
    """The event on its channel, then the retained state topic it changes (set, or cleared by an empty payload)."""
    rid = envelope["restaurant_id"]
    kind = envelope["type"]
    payload = encode(envelope)
    data = envelope.get("data", {})
    if kind == "kitchen_ticket":  # only the station's printers and the tablets read tickets
        return [Publication(topics.tickets(rid, data["ticket"]["station"]), payload)]
    channel = CHANNEL_TOPICS.get(kind, topics.NOTIFICATIONS)
    result = [Publication(topics.channel(rid, channel), payload)]
    if kind in ("new_order", "order_updated"):
        order = data["order"]
        state = payload if is_open(order["status"]) else b""
        result.append(Publication(topics.open_order(rid, order["id"]), state, retain=True))
    elif kind == "inventory_updated":
        result.append(Publication(topics.inventory_item(rid, data["item"]["id"]), payload, retain=True))
    elif kind == "menu_updated" and data.get("action") == "deleted" and "menu_item" in data:
        result.append(Publication(topics.inventory_item(rid, data["menu_item"]["id"]), b"", retain=True))
    return result
