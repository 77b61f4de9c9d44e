"""Request and response shapes. Validation here is what turns bad input into a 422."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.domain import OrderStatus

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
ShortText = Annotated[str, StringConstraints(max_length=500)]
Station = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
Quantity = Annotated[int, Field(gt=0, le=10_000)]
Modifier = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Weekday = Annotated[int, Field(ge=1, le=7)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class RestaurantIn(Strict):
    name: Name


class RestaurantOut(BaseModel):
    id: int
    name: str


class CategoryIn(Strict):
    name: Name
    position: Annotated[int, Field(ge=0, le=10_000)] = 0
    station: Station | None = None


class CategoryUpdate(Strict):
    name: Name | None = None
    position: Annotated[int, Field(ge=0, le=10_000)] | None = None
    station: Station | None = None


class MenuIn(Strict):
    name: Name
    active: bool = True


class MenuUpdate(Strict):
    name: Name | None = None
    active: bool | None = None


class MenuItemIn(Strict):
    menu_id: int
    category_id: int | None = None
    name: Name
    description: ShortText = ""
    price_cents: Annotated[int, Field(ge=0, le=10_000_000)]
    available: bool = True
    available_days: Annotated[list[Weekday], Field(max_length=7)] = []
    enable_stock_tracking: bool = False
    stock_quantity: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    low_stock_threshold: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    low_stock_clear_level: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    unit_weight_grams: Annotated[float, Field(gt=0, le=100_000)] | None = None


class MenuItemUpdate(Strict):
    category_id: int | None = None
    name: Name | None = None
    description: ShortText | None = None
    price_cents: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    available: bool | None = None
    available_days: Annotated[list[Weekday], Field(max_length=7)] | None = None
    enable_stock_tracking: bool | None = None
    low_stock_clear_level: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    unit_weight_grams: Annotated[float, Field(gt=0, le=100_000)] | None = None


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
    available_quantity: int


class StockAdjustIn(Strict):
    delta: Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
    reason: ShortText = ""


class DamageIn(Strict):
    quantity: Quantity
    reason: ShortText = ""


class ThresholdIn(Strict):
    low_stock_threshold: Annotated[int, Field(ge=0, le=1_000_000)] | None


class OrderItemIn(Strict):
    menu_item_id: int
    quantity: Quantity
    modifiers: Annotated[list[Modifier], Field(max_length=20)] = []
    notes: ShortText = ""
    course: Annotated[str, StringConstraints(max_length=40)] | None = None


class OrderIn(Strict):
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=100)]
    table_name: Annotated[str, StringConstraints(max_length=40)] | None = None
    pickup_name: Annotated[str, StringConstraints(max_length=80)] | None = None
    server_name: Annotated[str, StringConstraints(max_length=80)] | None = None
    notes: ShortText = ""


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
    items: list[OrderItemOut]


class StatusIn(Strict):
    status: OrderStatus


class RefundIn(Strict):
    amount_cents: Annotated[int, Field(gt=0, le=10_000_000)]
    reason: ShortText = ""


class NotificationOut(BaseModel):
    id: int
    kind: str
    title: str
    body: str
    read: bool
    created_at: datetime


DeviceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
DeviceKind = Literal["printer", "tablet", "scale"]
TokenDays = Annotated[int, Field(ge=1, le=3650)]
# Client ids the bus and the dashboards connect with: a device holding one could take their sessions over.
RESERVED_DEVICE_ID_PREFIXES = ("orderbus-", "user-")


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every one we store is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class DeviceIn(Strict):
    id: DeviceId
    kind: DeviceKind
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    station: Station | None = None
    ttl_days: TokenDays = 365
    item_id: int | None = None  # a scale's item
    tare_grams: Annotated[float, Field(ge=0, le=100_000)] = 0.0  # a scale's container weight

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith(RESERVED_DEVICE_ID_PREFIXES):
            raise ValueError(f"device ids may not start with {' or '.join(RESERVED_DEVICE_ID_PREFIXES)}")
        return value

    @model_validator(mode="after")
    def _station_fits_kind(self) -> DeviceIn:
        if self.kind == "printer" and self.station is None:
            raise ValueError("a printer needs the station whose tickets it prints")
        if self.kind == "scale" and self.station is not None:
            raise ValueError("a scale has no station")
        if self.kind != "scale" and (self.item_id is not None or self.tare_grams):
            raise ValueError("only a scale has an item and a tare")
        return self


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
