"""REST shapes: HTTP-only request bodies and every response, built from what the services return.

The commands the services take are in `core/commands.py`; the payloads the bus publishes are in
`core/events.py`. Validation here is what turns bad input into a 422.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Generic, Self, TypeVar

from pydantic import AfterValidator, BaseModel, EmailStr, Field, StringConstraints, model_validator
from pydantic import Strict as StrictType

from core import clock, events, sizes
from core.commands import TEXT, Id, Quantity, ShortText, Strict, TokenDays
from core.domain import MovementKind, OrderStatus
from core.events import available_quantity
from core.models import Device, MenuItem, Notification, Refund, Restaurant, StockMovement, Ticket, User
from core.rules.payments import PaymentStatus, payment_status
from core.services.devices import IssuedDevice
from core.services.order_list import DaySummary
from core.services.orders import OrderView
from core.services.users import Invited

T = TypeVar("T")


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every one we store is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class Page(BaseModel, Generic[T]):
    """One page of a list (`skip`/`limit`), and how many rows the whole list has."""

    data: list[T]
    count: int = Field(description="rows in the whole list, not only in `data`")


class ErrorOut(BaseModel):
    """What every 401, 403, 404 and 409 answers: why, in words."""

    detail: str


class LoginIn(Strict):
    email: EmailStr
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    restaurant_id: int | None
    role: str


class MqttTokenOut(BaseModel):
    token: str
    client_id_prefix: str
    expires_in: int
    restaurant_id: int | None


class RestaurantOut(BaseModel):
    id: int
    name: str
    currency: str  # ISO 4217; every `*_cents` of the restaurant is in hundredths of it
    timezone: str = clock.DEFAULT_TIMEZONE  # IANA name: its local date and business day
    day_starts_at: int = clock.DEFAULT_DAY_STARTS_AT  # local hour its business day (and order numbers) start


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: str
    restaurant_id: int | None


class InvitedUserOut(UserOut):
    """A new user with their one-time password: shown in this answer only, never stored in clear."""

    password: str


class ArchivedOut(RestaurantOut):
    archived_at: datetime
    devices_revoked: int  # by this request; 0 when it was archived already
    users_removed: int


class RestaurantCreatedOut(RestaurantOut):
    admin: InvitedUserOut | None  # the first admin, when one was asked for


class MenuItemOut(BaseModel):
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
    low_stock_clear_level: int | None = None
    low_stock_alerted: bool = False
    unit_weight_grams: float | None = None
    available_quantity: int | None = Field(description="stock minus damaged; null when stock is not tracked")
    available_now: bool | None = Field(
        default=None, description="orderable today on the restaurant's clock (stock aside); in the menu-items routes"
    )
    availability: clock.Availability | None = Field(
        default=None,
        description="`available`, `off` (switched off) or `not_today` (its `available_days` leave today out)",
    )


class StockAdjustIn(Strict):
    delta: Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
    reason: ShortText = ""


class DamageIn(Strict):
    quantity: Quantity
    reason: ShortText = ""


class DeliveryIn(Strict):
    """Units received (a supplier's delivery); the reason may name the supplier or the delivery note."""

    quantity: Quantity
    reason: ShortText = ""


class WriteOffIn(Strict):
    """Damaged units to remove from stock for good; why is required (binned, back to the supplier…)."""

    quantity: Quantity
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=sizes.REASON_CHARS), TEXT]


class ThresholdIn(Strict):
    low_stock_threshold: Annotated[int, Field(ge=0, le=1_000_000)] | None


class OrderItemOut(BaseModel):
    id: int
    menu_item_id: int
    name: str
    quantity: int
    unit_price_cents: int
    modifiers: list[str]
    notes: str
    course: str | None
    station: str | None


class OrderOut(BaseModel):
    id: int
    restaurant_id: int
    number: int  # per restaurant and business day: what the kitchen and the counter call the order
    business_date: date  # the restaurant's service it belongs to (`core.clock.business_date`)
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
    paid_at: UtcDatetime | None
    payment_status: PaymentStatus  # derived from paid_at and the figures: core.rules.payments
    items: list[OrderItemOut]


class DaySummaryOut(BaseModel):
    """One business day's totals, in hundredths of the restaurant's currency (`core.services.order_list`)."""

    business_date: date
    orders: int
    by_status: dict[str, int]
    revenue_cents: int = Field(description="the total of the day's orders that were not cancelled")
    refunds_cents: int = Field(description="what was refunded of those orders")
    net_cents: int


class StatusIn(Strict):
    status: Annotated[OrderStatus, StrictType(False)]  # its value, as JSON carries it


class RefundLineIn(Strict):
    order_item_id: Id  # a line of the order (its `items[].id`)
    quantity: Quantity


class RefundIn(Strict):
    """An amount, order lines given back, or both; the amount defaults to the lines' value."""

    amount_cents: Annotated[int, Field(gt=0, le=10_000_000)] | None = None
    reason: ShortText = ""
    lines: Annotated[list[RefundLineIn], Field(max_length=sizes.MAX_ORDER_LINES)] = []

    @model_validator(mode="after")
    def _amount_or_lines(self) -> Self:
        if self.amount_cents is None and not self.lines:
            raise ValueError("give amount_cents, lines, or both")
        return self


class RefundByOut(BaseModel):
    sub: str | None
    user_id: int | None
    email: str | None


class RefundLineOut(BaseModel):
    order_item_id: int
    quantity: int


class RefundOut(BaseModel):
    """One refund of an order; the same record the `order_updated` event with change "refund" carries."""

    id: int
    order_id: int
    amount_cents: int
    reason: str
    by: RefundByOut  # who refunded (all null for a refund made before this was recorded)
    created_at: UtcDatetime
    lines: list[RefundLineOut]


class NotificationOut(BaseModel):
    id: int
    kind: str
    title: str
    body: str
    read: bool
    created_at: datetime
    read_at: UtcDatetime | None
    dismissed_at: UtcDatetime | None


class DeviceTokenIn(Strict):
    ttl_days: TokenDays = 365


class DeviceOut(BaseModel):
    id: str
    kind: str
    name: str
    station: str | None
    presence: str
    boot_id: str | None = None
    last_seen: UtcDatetime | None
    item_id: int | None = None
    tare_grams: float = 0.0
    revoked: bool
    revoked_at: UtcDatetime | None
    created_at: UtcDatetime
    token_expires_at: UtcDatetime | None


class DeviceCredentialsOut(BaseModel):
    """Shown once: the token is not stored and cannot be read back."""

    device: DeviceOut
    token: str
    client_id: str
    expires_at: UtcDatetime


class TicketOut(BaseModel):
    id: int
    order_id: int
    version: int
    station: str
    kind: str
    state: str
    device_id: str | None
    detail: str
    created_at: UtcDatetime
    printed_at: UtcDatetime | None


class StockMovementOut(BaseModel):
    """One line of an item's stock ledger: the change, the figures after it, who and why."""

    id: int
    item_id: int
    kind: MovementKind
    stock_delta: int
    damaged_delta: int
    stock_after: int
    damaged_after: int
    reason: str
    actor: str | None = Field(description="the API token's subject (user-<id> for a login) or device:<id>")
    order_id: int | None
    created_at: UtcDatetime


# --- from what the services return to what the API answers ---------------------------------------


def order_out(view: OrderView) -> OrderOut:
    lines = [OrderItemOut.model_validate(line, from_attributes=True) for line in view.lines]
    order = view.order
    status = payment_status(order.paid_at, order.total_cents, order.refunded_cents)
    return OrderOut(**order.model_dump(), payment_status=status, items=lines)


def refund_out(refund: Refund) -> RefundOut:
    return RefundOut.model_validate(events.refund_state(refund))


def movement_out(line: StockMovement) -> StockMovementOut:
    return StockMovementOut.model_validate(line, from_attributes=True)


def item_out(item: MenuItem, local_day: date | None = None) -> MenuItemOut:
    """`local_day`: the restaurant's local date, for `available_now` and `availability` (left out without it)."""
    out = MenuItemOut(**item.model_dump(), available_quantity=available_quantity(item))
    if local_day is not None:
        out.availability = clock.availability(item.available, item.available_days, local_day)
        out.available_now = out.availability == "available"
    return out


def summary_out(summary: DaySummary) -> DaySummaryOut:
    return DaySummaryOut(
        business_date=summary.business_date,
        orders=summary.orders,
        by_status=summary.by_status,
        revenue_cents=summary.revenue_cents,
        refunds_cents=summary.refunds_cents,
        net_cents=summary.net_cents,
    )


def device_out(device: Device) -> DeviceOut:
    return DeviceOut.model_validate(device, from_attributes=True)


def credentials_out(issued: IssuedDevice) -> DeviceCredentialsOut:
    device = issued.device
    assert device.token_expires_at is not None
    return DeviceCredentialsOut(
        device=device_out(device), token=issued.token, client_id=device.id, expires_at=device.token_expires_at
    )


def notification_out(note: Notification) -> NotificationOut:
    return NotificationOut.model_validate(note, from_attributes=True)


def restaurant_out(restaurant: Restaurant) -> RestaurantOut:
    return RestaurantOut.model_validate(restaurant, from_attributes=True)


def user_out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


def invited_out(invited: Invited) -> InvitedUserOut:
    return InvitedUserOut(**user_out(invited.user).model_dump(), password=invited.password)


def ticket_out(ticket: Ticket) -> TicketOut:
    return TicketOut.model_validate(ticket, from_attributes=True)
