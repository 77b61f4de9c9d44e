"""The events of the bus: the envelope each one travels in, and one payload builder per event type.

These payloads are the bus's public contract with dashboards and devices. They are typed here,
apart from the REST response schemas (`api/schemas.py`), so that a change to what the REST API
answers cannot change what the bus publishes, nor the other way round. A service builds an
`Event` with one of the functions below and hands it to `UnitOfWork.emit`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel

from core.domain import OrderStatus, Stock
from core.models import Category, Device, Menu, MenuItem, Notification, Order, OrderItem, Refund, Ticket
from core.rules.payments import PaymentStatus, payment_status

ENVELOPE_VERSION = 1

NEW_ORDER = "new_order"
ORDER_UPDATED = "order_updated"
INVENTORY_UPDATED = "inventory_updated"
LOW_STOCK = "low_stock"
NOTIFICATION = "notification"
NOTIFICATION_UPDATED = "notification_updated"  # read or dismissed, by id: every dashboard agrees
KITCHEN_TICKET = "kitchen_ticket"
MENU_UPDATED = "menu_updated"
CATEGORY_UPDATED = "category_updated"
DEVICE_UPDATED = "device_updated"

RowAction = Literal["created", "updated", "deleted"]


def envelope(*, event_id: str, seq: int, type_: str, restaurant_id: int, data: dict[str, Any]) -> dict[str, Any]:
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "v": ENVELOPE_VERSION,
        "id": event_id,
        "seq": seq,
        "type": type_,
        "restaurant_id": restaurant_id,
        "ts": ts,
        "data": data,
    }


@dataclass(frozen=True)
class Event:
    """One event of a restaurant, before the unit of work gives it its seq and envelope."""

    type: str
    data: dict[str, Any]


# --- the state an event carries ------------------------------------------------------------------


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every one we store is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class OrderLineState(BaseModel):
    id: int
    menu_item_id: int
    name: str
    quantity: int
    unit_price_cents: int
    modifiers: list[str]
    notes: str
    course: str | None
    station: str | None


class OrderState(BaseModel):
    id: int
    restaurant_id: int
    number: int  # per restaurant and business day, what the kitchen and the counter call the order
    business_date: date  # the restaurant's service it belongs to (core.clock.business_date)
    status: OrderStatus
    table_name: str | None
    pickup_name: str | None
    server_name: str | None
    notes: str
    total_cents: int
    refunded_cents: int
    version: int
    created_at: datetime
    updated_at: datetime
    paid_at: UtcDatetime | None = None
    payment_status: PaymentStatus = PaymentStatus.UNPAID  # derived: core.rules.payments
    items: list[OrderLineState]


class RefundBy(BaseModel):
    """Who refunded, from their token; all None for a refund made before it was recorded."""

    sub: str | None
    user_id: int | None
    email: str | None


class RefundLineState(BaseModel):
    order_item_id: int
    quantity: int


class RefundState(BaseModel):
    id: int
    order_id: int
    amount_cents: int
    reason: str
    by: RefundBy
    created_at: UtcDatetime
    lines: list[RefundLineState]


class ItemState(BaseModel):
    id: int
    restaurant_id: int
    menu_id: int
    category_id: int | None
    name: str
    description: str
    price_cents: int
    available: bool
    available_days: list[int]
    enable_stock_tracking: bool
    stock_quantity: int
    damaged_quantity: int
    low_stock_threshold: int | None
    low_stock_clear_level: int | None
    low_stock_alerted: bool
    unit_weight_grams: float | None
    available_quantity: int | None  # None: the item's stock is not tracked (not "none left")


class NotificationState(BaseModel):
    id: int
    kind: str
    title: str
    body: str
    read: bool
    created_at: datetime
    read_at: UtcDatetime | None = None
    dismissed_at: UtcDatetime | None = None


class DeviceState(BaseModel):
    id: str
    kind: str
    name: str
    station: str | None
    presence: str
    boot_id: str | None
    last_seen: UtcDatetime | None
    item_id: int | None
    tare_grams: float
    revoked: bool
    revoked_at: UtcDatetime | None
    created_at: UtcDatetime
    token_expires_at: UtcDatetime | None


def order_state(order: Order, lines: Iterable[OrderItem]) -> dict[str, Any]:
    state = OrderState(
        **order.model_dump(),
        payment_status=payment_status(order.paid_at, order.total_cents, order.refunded_cents),
        items=[OrderLineState.model_validate(line, from_attributes=True) for line in lines],
    )
    return state.model_dump(mode="json")


def refund_state(refund: Refund) -> dict[str, Any]:
    """A refund as the bus and the API show it (`api.schemas.RefundOut` is validated from this)."""
    by = RefundBy(sub=refund.by_sub, user_id=refund.by_user_id, email=refund.by_email)
    state = RefundState(
        **refund.model_dump(exclude={"by_sub", "by_user_id", "by_email", "lines"}),
        by=by,
        lines=[RefundLineState.model_validate(line) for line in refund.lines],
    )
    return state.model_dump(mode="json")


def available_quantity(item: MenuItem) -> int | None:
    """What can be sold, or None for an item whose stock is not tracked: it is never short, and 0
    would read as sold out."""
    if not item.enable_stock_tracking:
        return None
    return Stock(item.stock_quantity, item.damaged_quantity, item.low_stock_threshold).available


def item_state(item: MenuItem) -> dict[str, Any]:
    return ItemState(**item.model_dump(), available_quantity=available_quantity(item)).model_dump(mode="json")


# --- one builder per event type ------------------------------------------------------------------


def new_order(order: Order, lines: Iterable[OrderItem]) -> Event:
    return Event(NEW_ORDER, {"order": order_state(order, lines)})


def order_updated(
    order: Order,
    lines: Iterable[OrderItem],
    change: str,
    refund: Refund | None = None,
    edit: tuple[Iterable[OrderItem], Iterable[OrderItem]] | None = None,
) -> Event:
    """`change` says what moved it (status, recall, refund, paid, items); a refund carries its record
    (`refund_state`).

    An edit of its lines (`change: "items"`) carries `before` (the lines it removed or changed, as they
    were) and `after` (the lines it added or changed, as they are now); `order.items` is every line now.
    Only the changed lines travel twice, so the event stays within one packet like the order itself."""
    data: dict[str, Any] = {"order": order_state(order, lines), "change": change}
    if refund is not None:
        data["refund"] = refund_state(refund)
    if edit is not None:
        data["before"] = [_line_state(line) for line in edit[0]]
        data["after"] = [_line_state(line) for line in edit[1]]
    return Event(ORDER_UPDATED, data)


def _line_state(line: OrderItem) -> dict[str, Any]:
    return OrderLineState.model_validate(line, from_attributes=True).model_dump(mode="json")


def inventory_updated(item: MenuItem, reason: str, kind: str) -> Event:
    """`kind`: the stock ledger's kind of the change (`core.domain.MovementKind`), beside the free-text reason."""
    return Event(INVENTORY_UPDATED, {"item": item_state(item), "reason": reason, "kind": str(kind)})


def low_stock(item: MenuItem, after: Stock) -> Event:
    data = {"item": item_state(item), "available_quantity": after.available}
    return Event(LOW_STOCK, data | {"low_stock_threshold": after.low_stock_threshold})


def notification(note: Notification) -> Event:
    state = NotificationState.model_validate(note, from_attributes=True)
    return Event(NOTIFICATION, {"notification": state.model_dump(mode="json")})


NotificationChange = Literal["read", "dismissed"]


def notification_updated(action: NotificationChange, ids: list[int], at: datetime) -> Event:
    """Notifications `ids` were marked read, or dismissed (which also reads them), at `at`.

    By id, not whole states: "mark all read" may change hundreds at once, and a dashboard only needs
    to know which of those it shows to flip. The service sends at most `NOTIFICATION_IDS_PER_EVENT`
    ids an event, so one event stays far below the broker's packet limit."""
    return Event(NOTIFICATION_UPDATED, {"action": action, "ids": ids, "at": _iso(at)})


NOTIFICATION_IDS_PER_EVENT = 1000  # 1000 ids of up to 19 digits: ~20 KiB


def kitchen_ticket(ticket: Ticket, order: Order, items: list[dict[str, Any]], resent: bool = False) -> Event:
    """What a printer prints: the ticket's lines (`ticket_items`); `resent` marks a ticket sent again, same id."""
    data: dict[str, Any] = {"ticket": ticket_body(ticket, order, items)}
    if resent:
        data["resent"] = True
    return Event(KITCHEN_TICKET, data)


def ticket_items(lines: Iterable[OrderItem]) -> list[dict[str, Any]]:
    """Order lines as a ticket carries them (and `Ticket.lines` keeps them)."""
    return [
        {
            "name": line.name,
            "quantity": line.quantity,
            "modifiers": list(line.modifiers),
            "notes": line.notes,
            "course": line.course,
        }
        for line in lines
    ]


def ticket_body(ticket: Ticket, order: Order, items: list[dict[str, Any]]) -> dict[str, Any]:
    """`partial`: an edit's chit, with only the lines it adds (`new`, printed ADD) or voids (`void`);
    a screen strikes those lines, not the whole order. Absent on whole-order tickets."""
    body: dict[str, Any] = {
        "id": ticket.id,
        "kind": ticket.kind,
        "order_id": order.id,
        "number": order.number,
        "version": ticket.version,
        "station": ticket.station,
        "created_at": _iso(ticket.created_at),
        "table_name": order.table_name,
        "pickup_name": order.pickup_name,
        "server_name": order.server_name,
        "notes": order.notes,
        "items": [dict(item) for item in items],
    }
    if ticket.partial:
        body["partial"] = True
    return body


def menu_item_changed(action: RowAction, item: MenuItem) -> Event:
    return Event(MENU_UPDATED, {"action": action, "menu_item": item_state(item)})


def menu_changed(action: RowAction, menu: Menu) -> Event:
    return Event(MENU_UPDATED, {"action": action, "menu": menu.model_dump(mode="json")})


def category_changed(action: RowAction, category: Category) -> Event:
    return Event(CATEGORY_UPDATED, {"action": action, "category": category.model_dump(mode="json")})


def device_updated(action: str, device: Device) -> Event:
    """`action`: created, token_reissued or revoked. Never the token: it is not stored."""
    state = DeviceState.model_validate(device, from_attributes=True)
    return Event(DEVICE_UPDATED, {"action": action, "device": state.model_dump(mode="json")})


def _iso(moment: datetime) -> str:
    """UTC, as the envelope's `ts` (SQLite hands datetimes back without their zone)."""
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
