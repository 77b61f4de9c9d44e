"""Tablet events (docs/devices.md): a KDS `bumped` / `recalled` → the order service, and an ack back.

The restaurant is the one in the topic (the broker has checked it against the token) and the
ingest has already checked that the device belongs to it; `orders` refuses an order id of
another restaurant as not found. The shape of the message is checked here, strictly, before
anything is written: a tablet is a screen somebody taps on, not a trusted peer. Which status a
bump may ask for, and which step a recall goes back, are rules of `core.domain`.

Reasons: `bad_type` (a field of the wrong JSON type, or an unknown event type), `bad_field`
(a field missing, unknown, or out of range, a bump target a screen may not ask for included).
Illegal transitions are DomainErrors, which the ingest answers as `refused`. A bump to the
status the order already has is acknowledged without a change: two screens bumping the same
order is not an error. The `request_id` is the tablet's idempotency key: a message sent again
with it (a QoS 1 redelivery, a retry after a lost ack) changes nothing and gets the first ack;
the same id with another request is refused as `bad_field`.
"""

from __future__ import annotations

from typing import Any

from bridge.ingest import DeviceMessage, Rejected
from core.domain import OrderStatus, bump_target
from core.models import Device, Order
from core.services import idempotency, orders
from core.unit_of_work import UnitOfWork

MAX_REQUEST_ID = 64
MAX_ORDER_ID = 2**63 - 1  # beyond this the database cannot hold the id: refuse rather than fail inside
_FIELDS = {
    "bumped": frozenset({"type", "order_id", "to", "request_id"}),
    "recalled": frozenset({"type", "order_id", "request_id"}),
}


def apply_tablet_event(uow: UnitOfWork, device: Device, message: DeviceMessage) -> dict[str, Any] | None:
    """Apply one tablet event through the order service; the reply is the ack the tablet waits for."""
    body = message.body
    kind = _event_type(body)
    _known_fields(body, _FIELDS[kind])
    request_id = _request_id(body)
    order_id = _order_id(body)
    scope = f"device:{device.id}|{message.restaurant_id}|tablet events"
    try:
        claimed = idempotency.claim(uow, scope, request_id, idempotency.request_hash("MQTT", "events", body))
    except idempotency.KeyReused as exc:
        raise Rejected("bad_field", f"request_id {request_id[:64]!r} was already used for another request") from exc
    if isinstance(claimed, idempotency.Stored):
        return dict(claimed.body)
    ack = _apply(uow, message.restaurant_id, kind, body, request_id, order_id)
    idempotency.keep(uow, claimed, 200, ack)
    return ack


def _apply(
    uow: UnitOfWork, restaurant_id: int, kind: str, body: dict[str, Any], request_id: str, order_id: int
) -> dict[str, Any]:
    if kind == "bumped":
        target = _target(body)
        order = orders.get_order(uow, restaurant_id, order_id, lock=True)  # two screens at once: one moves it
        if order.status == target:  # another screen bumped it first: already done
            return _ack(request_id, order)
        result = orders.change_status(uow, restaurant_id, order_id, target)
    else:
        result = orders.recall(uow, restaurant_id, order_id)
    return _ack(request_id, result.order)


def _event_type(body: dict[str, Any]) -> str:
    kind = _required(body, "type")
    if not isinstance(kind, str):
        raise Rejected("bad_type", "type must be a string")
    if kind not in _FIELDS:
        raise Rejected("bad_type", f"unknown tablet event type {kind[:40]!r}; expected one of {sorted(_FIELDS)}")
    return kind


def _known_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Rejected("bad_field", f"unknown field(s): {', '.join(name[:40] for name in unknown[:5])}")


def _request_id(body: dict[str, Any]) -> str:
    value = _required(body, "request_id")
    if not isinstance(value, str):
        raise Rejected("bad_type", "request_id must be a string")
    if not 0 < len(value) <= MAX_REQUEST_ID:
        raise Rejected("bad_field", f"request_id must be 1 to {MAX_REQUEST_ID} characters")
    return value


def _order_id(body: dict[str, Any]) -> int:
    value = _required(body, "order_id")
    if isinstance(value, bool) or not isinstance(value, int):  # JSON true is a Python int: not an id
        raise Rejected("bad_type", "order_id must be an integer")
    if not 0 < value <= MAX_ORDER_ID:
        raise Rejected("bad_field", "order_id must be a positive integer")
    return value


def _target(body: dict[str, Any]) -> OrderStatus:
    value = _required(body, "to")
    if not isinstance(value, str):
        raise Rejected("bad_type", "to must be a string")
    return bump_target(value)


def _required(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise Rejected("bad_field", f"{name} is missing")
    return body[name]


def _ack(request_id: str, order: Order) -> dict[str, Any]:
    """`version` lets the tablet apply the new status at once without undoing a later event."""
    return {
        "type": "ack",
        "request_id": request_id,
        "order_id": order.id,
        "status": str(order.status),
        "version": order.version,
    }
