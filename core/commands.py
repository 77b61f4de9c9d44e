"""Commands: the input a service takes, validated. A failed check here is a 422 at the API.

What only HTTP sees (login, tokens, the bodies of single-figure endpoints, every response) is in
`api/schemas.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
ShortText = Annotated[str, StringConstraints(max_length=500)]
Station = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
Quantity = Annotated[int, Field(gt=0, le=10_000)]
Modifier = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Weekday = Annotated[int, Field(ge=1, le=7)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RestaurantIn(Strict):
    name: Name


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


DeviceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
DeviceKind = Literal["printer", "tablet", "scale"]
TokenDays = Annotated[int, Field(ge=1, le=3650)]
# Client ids the bus and the dashboards connect with: a device holding one could take their sessions over.
RESERVED_DEVICE_ID_PREFIXES = ("orderbus-", "user-")


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
