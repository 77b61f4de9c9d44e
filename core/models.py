"""Persistent state: SQLModel tables. Rules about them live in `core.domain`, not here."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite reuses the id of a deleted last row unless the table is AUTOINCREMENT; events, retained topics
# and tokens name rows by id, so every table with an integer key carries this (PostgreSQL's sequences
# never reuse). A new table adds it too: tests/integration/test_stable_ids.py checks every one.
STABLE_IDS = {"sqlite_autoincrement": True}


class Restaurant(SQLModel, table=True):
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    name: str
    event_seq: int = 0  # last seq handed out; bumped in the same transaction as each event
    order_seq: int = 0  # last order number handed out (`Order.number`) on `order_day`, under the same row lock
    order_day: date | None = None  # the business date `order_seq` counts in; a later one restarts it at 1
    currency: str = "EUR"  # ISO 4217; amounts are in hundredths of it
    archived_at: datetime | None = None  # closed: out of the lists, no devices, no staff (core.services.archive)
    # its clock (core.clock): an IANA zone name, and the local hour its business day starts; the server
    # defaults let a row written without them (an older tool's raw insert) read as before: UTC, 04:00
    timezone: str = Field(default="UTC", sa_column_kwargs={"server_default": "UTC"})
    day_starts_at: int = Field(default=4, sa_column_kwargs={"server_default": "4"})


class User(SQLModel, table=True):
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int | None = Field(default=None, foreign_key="restaurant.id", index=True)
    email: str = Field(unique=True, index=True)
    name: str
    role: str  # super_admin | admin | staff
    password_hash: str


class Category(SQLModel, table=True):
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    name: str
    position: int = 0
    station: str | None = None  # kitchen station its items print at


class Menu(SQLModel, table=True):
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    name: str
    active: bool = True


class MenuItem(SQLModel, table=True):
    __tablename__ = "menu_item"
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    menu_id: int = Field(foreign_key="menu.id", index=True)
    category_id: int | None = Field(default=None, foreign_key="category.id")
    name: str
    description: str = ""
    price_cents: int
    available: bool = True
    available_days: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    enable_stock_tracking: bool = False
    stock_quantity: int = 0
    damaged_quantity: int = 0
    low_stock_threshold: int | None = None  # alert when available stock is at or below it
    low_stock_clear_level: int | None = None  # re-arm the alert only above it (hysteresis); None = the threshold
    low_stock_alerted: bool = False  # an alert was raised and has not been re-armed yet
    unit_weight_grams: float | None = None  # what one unit weighs, for scales


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    # what the kitchen calls the order: 1, 2, 3… per restaurant and business day; `id` stays the API's global key
    __table_args__ = (
        UniqueConstraint("restaurant_id", "business_date", "number", name="uq_orders_restaurant_day_number"),
        STABLE_IDS,
    )

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    number: int = 0
    business_date: date  # the restaurant's service it belongs to (core.clock.business_date)
    status: str = "pending"
    table_name: str | None = None
    pickup_name: str | None = None
    server_name: str | None = None
    notes: str = ""
    # BIGINT: the largest valid order (sizes.MAX_ORDER_LINES lines of 999 at the top price) is far
    # above PostgreSQL's INTEGER; SQLite's INTEGER is 64-bit anyway
    total_cents: int = Field(default=0, sa_type=BigInteger)
    refunded_cents: int = Field(default=0, sa_type=BigInteger)
    version: int = 1  # bumped on every change; (order_id, version) identifies a ticket
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    paid_at: datetime | None = None  # staff said it was paid (core.rules.payments: what "paid" means)


class OrderItem(SQLModel, table=True):
    __tablename__ = "order_item"
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id", index=True)
    menu_item_id: int = Field(foreign_key="menu_item.id")
    name: str
    quantity: int
    unit_price_cents: int
    modifiers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notes: str = ""
    course: str | None = None
    station: str | None = None


class Refund(SQLModel, table=True):
    """One refund of an order; the order's `refunded_cents` is the sum of its refunds' amounts."""

    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id", index=True)
    amount_cents: int = Field(sa_type=BigInteger)  # at most the order's total (BIGINT)
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    # who refunded, copied from their token (no foreign key: the history outlives a removed user);
    # None on refunds made before 0007 recorded it
    by_sub: str | None = None
    by_user_id: int | None = None
    by_email: str | None = None
    # order lines given back: [{"order_item_id": …, "quantity": …}], empty for an amount alone
    lines: list[dict[str, int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a write sent with an idempotency key, committed with the write itself.

    `scope` is who asked where (caller, restaurant, route): the same key of another caller is
    another request. The unique constraint is what stops two concurrent requests with one key
    from both writing, on any database.
    """

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("scope", "key"), STABLE_IDS)

    id: int | None = Field(default=None, primary_key=True)
    scope: str
    key: str
    request_hash: str  # sha256 of method, path and canonical body
    status_code: int | None = None  # set once the guarded change is done, in the same transaction
    body: dict | list | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Notification(SQLModel, table=True):
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    kind: str
    title: str
    body: str = ""
    read: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    read_at: datetime | None = None  # when it was marked read; old read ones are pruned (core.services.notifications)
    dismissed_at: datetime | None = None  # dismissed: out of the list for every dashboard, read as well


class Device(SQLModel, table=True):
    id: str = Field(primary_key=True)  # the MQTT client id and token `sub`
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    kind: str  # printer | tablet | scale
    name: str
    station: str | None = None
    presence: str = "unknown"  # online | offline | lost | unknown
    boot_id: str | None = None  # of the run that last said `online`; orders presence messages
    last_seen: datetime | None = None  # last message of any kind from the device
    item_id: int | None = Field(default=None, foreign_key="menu_item.id")  # a scale's item
    tare_grams: float = 0.0  # a scale's container weight
    revoked: bool = False
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    token_jti: str | None = None  # jti of the one token the broker accepts for it; the token itself is never stored
    token_expires_at: datetime | None = None


class Ticket(SQLModel, table=True):
    """One kitchen ticket for one station; its id is what printers dedupe by."""

    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    order_id: int = Field(foreign_key="orders.id", index=True)
    version: int  # the order's version it was cut from
    station: str
    kind: str  # new | void | reprint
    # the lines it carries, as printed (`events.ticket_items`): a chit of an edit carries only what changed,
    # so a resend must not recompute them from the order; None on tickets cut before the column existed
    lines: list[dict] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    partial: bool = False  # an edit's ADD or VOID chit: some lines of the order, not all of it
    state: str = Field(default="sent", index=True)  # sent | printed | failed | unacknowledged
    device_id: str | None = None  # the printer that reported on it
    detail: str = ""  # why it failed
    created_at: datetime = Field(default_factory=utcnow)
    printed_at: datetime | None = None


class OutboxEvent(SQLModel, table=True):
    """One committed event; the relay publishes it and then stamps `published_at`.

    An event the relay cannot publish (over the broker's packet limit, not encodable, or refused by
    the broker `attempts` times in a row) is dead-lettered: `published_at` is stamped all the same
    (the relay is done with it and goes on), `dead_letter_at` and `dead_letter_reason` say why no
    MQTT copy went out; `/events` still serves it.
    """

    __tablename__ = "outbox_event"
    __table_args__ = (UniqueConstraint("restaurant_id", "seq"), STABLE_IDS)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    seq: int
    type: str
    envelope: dict = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = Field(default=None, index=True)
    attempts: int | None = None  # broker disconnects while this event was in flight (None: none)
    dead_letter_at: datetime | None = None
    dead_letter_reason: str | None = None


class StockMovement(SQLModel, table=True):
    """One line of an item's stock ledger, written by `core.services.inventory.apply_stock` with the
    change itself: its deltas summed from the item's first line are the item's stock and damaged now.

    `item_id` has no foreign key: a deleted item's history stays, and its id is never reused.
    `actor` is who moved it: the API token's subject (`user-<id>` for a login) or `device:<id>`;
    None when no caller is known (the demo, the upgrade's opening balance)."""

    __tablename__ = "stock_movement"
    __table_args__ = STABLE_IDS

    id: int | None = Field(default=None, primary_key=True)
    restaurant_id: int = Field(foreign_key="restaurant.id", index=True)
    item_id: int = Field(index=True)
    kind: str  # core.domain.MovementKind
    stock_delta: int
    damaged_delta: int
    stock_after: int
    damaged_after: int
    reason: str = ""
    actor: str | None = None
    order_id: int | None = Field(default=None, foreign_key="orders.id")  # a sale or a return
    created_at: datetime = Field(default_factory=utcnow)
