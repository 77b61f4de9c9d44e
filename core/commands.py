"""Commands: the input a service takes, validated. A failed check here is a 422 at the API.

What only HTTP sees (login, tokens, the bodies of single-figure endpoints, every response) is in
`api/schemas.py`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

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

from core import clock, sizes


def _printable(value: str) -> str:
    """No control characters (a newline and a tab are text) and no lone surrogates, which UTF-8 cannot encode."""
    for char in value:
        code = ord(char)
        if (code < 0x20 and char not in "\n\t") or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"character U+{code:04X} is not allowed in text")
    return value


def _one_line(value: str) -> str:
    if "\n" in value or "\t" in value:
        raise ValueError("a line break or a tab is not allowed here")
    return _printable(value)


# Every string a person types ends with one of these two checks, after its length: `TEXT` may span lines.
TEXT = AfterValidator(_printable)
LINE = AfterValidator(_one_line)

# A row id, in a body, a path or a query: what a signed 64-bit database column holds.
Id = Annotated[int, Field(ge=1, le=sizes.MAX_ID)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=sizes.NAME_CHARS), LINE]
DeviceName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=sizes.DEVICE_NAME_CHARS), LINE
]
Description = Annotated[str, StringConstraints(max_length=sizes.DESCRIPTION_CHARS), TEXT]
ShortText = Annotated[str, StringConstraints(max_length=sizes.REASON_CHARS), TEXT]
Station = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
Quantity = Annotated[int, Field(gt=0, le=10_000)]
Modifier = Annotated[str, StringConstraints(min_length=1, max_length=sizes.MODIFIER_CHARS), LINE]
Weekday = Annotated[int, Field(ge=1, le=7)]


class Strict(BaseModel):
    """Input as sent: no field the model lacks, no `true` for 1 nor `"2"` for 2, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Patch(Strict):
    """A partial update: a field left out keeps its value; `null` clears it only where the column
    may be empty (`NULLABLE`). Elsewhere `null` is refused here (422), not by the database's NOT NULL
    constraint mid-transaction (which answered 500)."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_where_required(self) -> Self:
        for name in sorted(self.model_fields_set - self.NULLABLE):
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null (leave it out to keep its value)")
        return self


# ISO 4217 code: amounts stay in hundredths (`*_cents`); the code says which money they are
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


# An IANA zone name the system knows (`Europe/Paris`); its local date drives `available_days` and order numbers
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(clock.valid_timezone)]
# The local hour a restaurant's business day starts (`core.clock.business_date`)
DayStart = Annotated[int, Field(ge=0, le=23)]


class RestaurantIn(Strict):
    name: Name
    currency: Currency = "EUR"
    timezone: TimeZone = clock.DEFAULT_TIMEZONE
    day_starts_at: DayStart = clock.DEFAULT_DAY_STARTS_AT


class RestaurantUpdate(Patch):
    """What a restaurant's admin may change about it. A new zone or day start applies to orders placed
    from then on: numbers already given keep their business date."""

    name: Name | None = None
    timezone: TimeZone | None = None
    day_starts_at: DayStart | None = None


# A password as typed: at least 8 characters (argon2 hashes any length; 200 bounds the work per login)
Password = Annotated[str, StringConstraints(min_length=8, max_length=200), LINE]
UserRole = Literal["admin", "staff"]  # what an admin may invite; a super_admin is made by the CLI only


class UserIn(Strict):
    """A person to invite into a restaurant: the service makes their one-time password."""

    email: EmailStr
    name: Name
    role: UserRole = "staff"


class AdminIn(Strict):
    """A restaurant's first admin, invited with the restaurant."""

    email: EmailStr
    name: Name


class NewRestaurantIn(RestaurantIn):
    """A restaurant and, usually, its first admin, made in one transaction. Without `admin` the
    restaurant has nobody to run it until a super_admin invites one (`POST /restaurants/{rid}/users`)."""

    admin: AdminIn | None = None


class PasswordChangeIn(Strict):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    new_password: Password


class CategoryIn(Strict):
    name: Name
    position: Annotated[int, Field(ge=0, le=10_000)] = 0
    station: Station | None = None


class CategoryUpdate(Patch):
    NULLABLE = frozenset({"station"})

    name: Name | None = None
    position: Annotated[int, Field(ge=0, le=10_000)] | None = None
    station: Station | None = None


class MenuIn(Strict):
    name: Name
    active: bool = True


class MenuUpdate(Patch):
    name: Name | None = None
    active: bool | None = None


class MenuItemIn(Strict):
    menu_id: Id
    category_id: Id | None = None
    name: Name
    description: Description = ""
    price_cents: Annotated[int, Field(ge=0, le=10_000_000)]
    available: bool = True
    available_days: Annotated[list[Weekday], Field(max_length=7)] = []
    enable_stock_tracking: bool = False
    stock_quantity: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    low_stock_threshold: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    low_stock_clear_level: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    unit_weight_grams: Annotated[float, Field(gt=0, le=100_000)] | None = None


class MenuItemUpdate(Patch):
    NULLABLE = frozenset({"category_id", "low_stock_clear_level", "unit_weight_grams"})

    category_id: Id | None = None
    name: Name | None = None
    description: Description | None = None
    price_cents: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    available: bool | None = None
    available_days: Annotated[list[Weekday], Field(max_length=7)] | None = None
    enable_stock_tracking: bool | None = None
    low_stock_clear_level: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    unit_weight_grams: Annotated[float, Field(gt=0, le=100_000)] | None = None


class OrderItemIn(Strict):
    menu_item_id: Id
    quantity: Annotated[int, Field(gt=0, le=sizes.MAX_LINE_QUANTITY)]
    modifiers: Annotated[list[Modifier], Field(max_length=sizes.MODIFIERS_PER_LINE)] = []
    notes: Annotated[str, StringConstraints(max_length=sizes.LINE_NOTES_CHARS), TEXT] = ""
    course: Annotated[str, StringConstraints(max_length=sizes.COURSE_CHARS), LINE] | None = None


class OrderIn(Strict):
    """At most `sizes.MAX_ORDER_LINES` lines: the largest order is still one MQTT packet."""

    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=sizes.MAX_ORDER_LINES)]
    table_name: Annotated[str, StringConstraints(max_length=sizes.TABLE_CHARS), LINE] | None = None
    pickup_name: Annotated[str, StringConstraints(max_length=sizes.PERSON_CHARS), LINE] | None = None
    server_name: Annotated[str, StringConstraints(max_length=sizes.PERSON_CHARS), LINE] | None = None
    notes: Annotated[str, StringConstraints(max_length=sizes.ORDER_NOTES_CHARS), TEXT] = ""


DeviceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
DeviceKind = Literal["printer", "tablet", "scale"]
TokenDays = Annotated[int, Field(ge=1, le=3650)]
# Client ids the bus and the dashboards connect with: a device holding one could take their sessions over.
RESERVED_DEVICE_ID_PREFIXES = ("orderbus-", "user-")


class DeviceIn(Strict):
    id: DeviceId
    kind: DeviceKind
    name: DeviceName
    station: Station | None = None
    ttl_days: TokenDays = 365
    item_id: Id | None = None  # a scale's item
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


def _left_out_not_null(value: object) -> object:
    """`null` is refused where leaving the field out is how to keep what is there."""
    if value is None:
        raise ValueError("may not be null (leave it out to keep what the order has)")
    return value


class LineRemovalIn(Strict):
    """Take `quantity` of an order line off the order (all of it: its whole quantity)."""

    line_id: Id
    quantity: Annotated[int, Field(gt=0, le=sizes.MAX_LINE_QUANTITY)]


class LineChangeIn(Strict):
    """New modifiers and/or notes for an order line; what is left out stays."""

    line_id: Id
    modifiers: Annotated[list[Modifier], Field(max_length=sizes.MODIFIERS_PER_LINE)] | None = None
    notes: Annotated[str, StringConstraints(max_length=sizes.LINE_NOTES_CHARS), TEXT] | None = None

    _not_null = field_validator("modifiers", "notes", mode="before")(_left_out_not_null)

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if self.modifiers is None and self.notes is None:
            raise ValueError("a change needs modifiers or notes")
        return self


class OrderEditIn(Strict):
    """An edit of a placed order (`core.services.order_edits`): lines to add, to remove or reduce, to
    change, and new order notes. At least one of them; the edit is applied whole or not at all."""

    add: Annotated[list[OrderItemIn], Field(max_length=sizes.MAX_ORDER_LINES)] = []
    remove: Annotated[list[LineRemovalIn], Field(max_length=sizes.MAX_ORDER_LINES)] = []
    change: Annotated[list[LineChangeIn], Field(max_length=sizes.MAX_ORDER_LINES)] = []
    notes: Annotated[str, StringConstraints(max_length=sizes.ORDER_NOTES_CHARS), TEXT] | None = None

    _not_null = field_validator("notes", mode="before")(_left_out_not_null)

    @model_validator(mode="after")
    def _edits_something(self) -> Self:
        if not (self.add or self.remove or self.change) and self.notes is None:
            raise ValueError("an edit needs at least one of add, remove, change or notes")
        return self
