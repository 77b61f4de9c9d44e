"""A kitchen ticket as the bus sends it (docs/devices.md), parsed and checked before anything prints.

Whatever reaches a printer comes from the network: every field is type-checked and bounded here,
so the renderer can trust what it gets and a bad message is refused with a reason instead of
crashing the agent or printing half a ticket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from core.sizes import MAX_PACKET_BYTES

MAX_PAYLOAD = MAX_PACKET_BYTES  # the largest valid order's ticket, escaped, is up to one packet
MAX_ITEMS = 200
MAX_MODIFIERS = 30
KINDS = ("new", "void", "reprint")


class BadTicket(ValueError):
    """A message that is not a printable ticket; `ticket_id` is set when the id itself was readable."""

    def __init__(self, detail: str, ticket_id: int | None = None) -> None:
        super().__init__(detail)
        self.ticket_id = ticket_id


@dataclass(frozen=True)
class Item:
    name: str
    quantity: int
    modifiers: tuple[str, ...] = ()
    notes: str = ""
    course: str | None = None


@dataclass(frozen=True)
class Ticket:
    id: int
    kind: str
    order_id: int
    version: int
    station: str
    created_at: datetime
    items: tuple[Item, ...]
    number: int | None = None  # the restaurant's order number, which the kitchen calls out (older buses send none)
    table_name: str | None = None
    pickup_name: str | None = None
    server_name: str | None = None
    notes: str = ""
    partial: bool = False  # an edit's chit: only the lines it adds (`new`) or voids (`void`), not the whole order

    @property
    def is_add(self) -> bool:
        """An ADD chit: items added to an order the kitchen already has (a `new` ticket of a later version)."""
        return self.kind == "new" and (self.partial or self.version > 1)

    @property
    def fingerprint(self) -> str:
        """Tells a redelivered ticket from a different one reusing its id (the bus's database was reset)."""
        return f"{self.order_id}/{self.version}/{self.kind}/{self.created_at.isoformat()}"

    def to_json(self) -> str:
        """The ticket as the bus sent it; `parse_ticket(json.loads(...))` gives it back (the journal keeps it)."""
        body = {
            "id": self.id,
            "kind": self.kind,
            "order_id": self.order_id,
            "number": self.number,
            "version": self.version,
            "station": self.station,
            "created_at": self.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "table_name": self.table_name,
            "pickup_name": self.pickup_name,
            "server_name": self.server_name,
            "notes": self.notes,
            "items": [
                {
                    "name": i.name,
                    "quantity": i.quantity,
                    "modifiers": list(i.modifiers),
                    "notes": i.notes,
                    "course": i.course,
                }
                for i in self.items
            ],
        }
        if self.partial:
            body["partial"] = True
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def parse_envelope(payload: bytes | bytearray) -> Ticket:
    """A `kitchen_ticket` event's ticket; BadTicket for anything else."""
    if len(payload) > MAX_PAYLOAD:
        raise BadTicket(f"payload of {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
    try:
        envelope = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadTicket(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise BadTicket("the envelope is not a JSON object")
    if envelope.get("type") != "kitchen_ticket":
        raise BadTicket("not a kitchen_ticket event")
    data = envelope.get("data")
    ticket = data.get("ticket") if isinstance(data, dict) else None
    if not isinstance(ticket, dict):
        raise BadTicket("data.ticket is missing or not an object")
    return parse_ticket(ticket)


def parse_ticket(raw: dict[str, Any]) -> Ticket:
    ticket_id = raw.get("id")
    known_id = ticket_id if _is_int(ticket_id) and ticket_id > 0 else None
    try:
        if known_id is None:
            raise BadTicket("id must be a positive integer")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise BadTicket(f"kind must be one of {', '.join(KINDS)}")
        items = raw.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise BadTicket(f"items must be a list of 1 to {MAX_ITEMS} items")
        return Ticket(
            id=known_id,
            kind=kind,
            order_id=_int(raw, "order_id", 1, 2**53),
            number=None if raw.get("number") is None else _int(raw, "number", 1, 2**31),
            version=_int(raw, "version", 1, 2**31),
            station=_text(raw, "station", 64, required=True) or "",
            created_at=_moment(raw.get("created_at")),
            items=tuple(_item(item, index) for index, item in enumerate(items)),
            table_name=_text(raw, "table_name", 60),
            pickup_name=_text(raw, "pickup_name", 60),
            server_name=_text(raw, "server_name", 60),
            notes=_text(raw, "notes", 500) or "",
            partial=_flag(raw, "partial"),
        )
    except BadTicket as exc:
        raise BadTicket(str(exc), known_id) from None


def _item(raw: Any, index: int) -> Item:
    if not isinstance(raw, dict):
        raise BadTicket(f"items[{index}] is not an object")
    modifiers = raw.get("modifiers", [])
    if not isinstance(modifiers, list) or len(modifiers) > MAX_MODIFIERS:
        raise BadTicket(f"items[{index}].modifiers must be a list of at most {MAX_MODIFIERS} strings")
    if not all(isinstance(m, str) and len(m) <= 100 for m in modifiers):
        raise BadTicket(f"items[{index}].modifiers must be strings of at most 100 characters")
    return Item(
        name=_text(raw, "name", 120, required=True, where=f"items[{index}].") or "",
        quantity=_int(raw, "quantity", 1, 999, where=f"items[{index}]."),
        modifiers=tuple(modifiers),
        notes=_text(raw, "notes", 300, where=f"items[{index}].") or "",
        course=_text(raw, "course", 40, where=f"items[{index}]."),
    )


def _flag(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise BadTicket(f"{key} must be true or false")
    return value


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # bool is an int subclass: true is not a ticket id


def _int(raw: dict[str, Any], key: str, low: int, high: int, where: str = "") -> int:
    value = raw.get(key)
    if not _is_int(value) or not low <= value <= high:
        raise BadTicket(f"{where}{key} must be an integer from {low} to {high}")
    return value


def _text(raw: dict[str, Any], key: str, limit: int, *, required: bool = False, where: str = "") -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        need = "a non-empty string" if required else "a string or null"
        raise BadTicket(f"{where}{key} must be {need} of at most {limit} characters")
    return value


def _moment(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise BadTicket("created_at must be an ISO 8601 timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadTicket(f"created_at is not an ISO 8601 timestamp: {exc}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
