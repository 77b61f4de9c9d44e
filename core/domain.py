"""Domain rules of orders and stock, as pure functions over plain values.

Nothing here touches the database or the network: the service layer calls these and
turns their answers into state changes and events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class DomainError(Exception):
    """A request that breaks a business rule. The transport decides what it becomes (HTTP 409, a device reason)."""


class NotFound(DomainError):
    """The thing named does not exist, or not in the caller's restaurant."""


class Forbidden(DomainError):
    """The caller may not do this, whoever the target is (another restaurant's user, staff inviting)."""


class WrongPassword(DomainError):
    """The password given to confirm a change is not the caller's."""


class Invalid(DomainError):
    """A value that breaks a rule of the core; `reason` names the rule for machines (`not_whole`, `replayed`…).

    The transport turns `reason` into what its clients read: a device's error reply, a metric label.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class OrderStatus(StrEnum):
    PENDING = "pending"
    PREPARING = "preparing"
    READY = "ready"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PREPARING, OrderStatus.CANCELLED}),
    OrderStatus.PREPARING: frozenset({OrderStatus.READY, OrderStatus.CANCELLED}),
    OrderStatus.READY: frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED}),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
RECALLS: dict[OrderStatus, OrderStatus] = {  # a kitchen screen's "recall": one step back
    OrderStatus.READY: OrderStatus.PREPARING,
    OrderStatus.COMPLETED: OrderStatus.READY,
}
BUMPS: dict[OrderStatus, OrderStatus] = {  # a kitchen screen's "bump": one step on; completed = picked up
    OrderStatus.PENDING: OrderStatus.PREPARING,
    OrderStatus.PREPARING: OrderStatus.READY,
    OrderStatus.READY: OrderStatus.COMPLETED,
}
BUMP_TARGETS = frozenset(BUMPS.values())  # a kitchen screen moves orders on; it never cancels one
OPEN_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.PREPARING, OrderStatus.READY})


def check_transition(current: str, new: str) -> OrderStatus:
    """The new status, or DomainError if the order may not move there."""
    try:
        source, target = OrderStatus(current), OrderStatus(new)
    except ValueError as exc:
        raise DomainError(f"unknown order status: {exc}") from exc
    if target not in TRANSITIONS[source]:
        raise DomainError(f"an order that is {source} cannot become {target}")
    return target


def check_recall(current: str) -> OrderStatus:
    """The status a recalled order goes back to, or DomainError if there is no step back."""
    source = OrderStatus(current)
    if source not in RECALLS:
        raise DomainError(f"an order that is {source} cannot be recalled")
    return RECALLS[source]


def bump_target(to: str) -> OrderStatus:
    """The status a kitchen screen bumps an order to, or Invalid `unknown_target` for one a screen may not ask for."""
    if to not in BUMP_TARGETS:
        raise Invalid("unknown_target", f"to must be one of {sorted(str(status) for status in BUMP_TARGETS)}")
    return OrderStatus(to)


DEFAULT_STATION = "kitchen"  # where items of a category without a station print


def station_of(category_station: str | None) -> str:
    return category_station or DEFAULT_STATION


def is_open(status: str) -> bool:
    return OrderStatus(status) in OPEN_STATUSES


@dataclass(frozen=True)
class Stock:
    """The stock figures of one tracked item."""

    stock_quantity: int
    damaged_quantity: int
    low_stock_threshold: int | None

    @property
    def available(self) -> int:
        return self.stock_quantity - self.damaged_quantity

    def is_low(self) -> bool:
        return self.low_stock_threshold is not None and self.available <= self.low_stock_threshold


@dataclass(frozen=True)
class LowStockAlarm:
    """Whether to alert now, and whether the alarm stays raised afterwards."""

    fire: bool
    alerted: bool


def low_stock_alarm(after: Stock, alerted: bool, clear_level: int | None = None) -> LowStockAlarm:
    """Alert once when available stock is at or below the threshold; re-arm only above `clear_level`.

    The gap between the two levels (hysteresis) keeps a scale that wobbles around the threshold
    from alerting on every wobble; `clear_level` None means the threshold itself.
    """
    if after.low_stock_threshold is None:
        return LowStockAlarm(fire=False, alerted=False)
    if after.is_low():
        return LowStockAlarm(fire=not alerted, alerted=True)
    clear = after.low_stock_threshold if clear_level is None else max(clear_level, after.low_stock_threshold)
    return LowStockAlarm(fire=False, alerted=alerted and after.available <= clear)


def take(stock: Stock, quantity: int, item_name: str) -> Stock:
    """Stock after selling `quantity`; refuses to sell what is not available."""
    _positive(quantity)
    if quantity > stock.available:
        raise DomainError(f"not enough {item_name}: {stock.available} available, {quantity} ordered")
    return Stock(stock.stock_quantity - quantity, stock.damaged_quantity, stock.low_stock_threshold)


def mark_damaged(stock: Stock, quantity: int, item_name: str) -> Stock:
    """Damaged goods raise `damaged_quantity` only; `stock_quantity` stays as counted."""
    _positive(quantity)
    if quantity > stock.available:
        raise DomainError(f"cannot mark {quantity} {item_name} damaged: {stock.available} available")
    return Stock(stock.stock_quantity, stock.damaged_quantity + quantity, stock.low_stock_threshold)


def adjust(stock: Stock, delta: int, item_name: str) -> Stock:
    """A counted correction or delivery; stock never drops below what is already damaged."""
    new_quantity = stock.stock_quantity + delta
    if new_quantity < stock.damaged_quantity:
        raise DomainError(f"cannot remove {-delta} {item_name}: only {stock.available} available")
    return Stock(new_quantity, stock.damaged_quantity, stock.low_stock_threshold)


def write_off(stock: Stock, quantity: int, item_name: str) -> Stock:
    """Damaged units thrown away: they leave `stock_quantity` and `damaged_quantity` together, so
    available stock is unchanged and damaged stops growing forever; only what is damaged can go."""
    _positive(quantity)
    if quantity > stock.damaged_quantity:
        raise DomainError(f"cannot write off {quantity} {item_name}: only {stock.damaged_quantity} damaged")
    return Stock(stock.stock_quantity - quantity, stock.damaged_quantity - quantity, stock.low_stock_threshold)


class MovementKind(StrEnum):
    """Why stock moved: one line of the stock ledger (`core.models.StockMovement`) each."""

    RECEIVED = "received"  # a delivery (no route yet: adjustments are `adjusted`)
    SOLD = "sold"  # taken by an order
    RETURNED = "returned"  # given back by a cancelled order
    DAMAGED = "damaged"
    WRITTEN_OFF = "written_off"
    COUNTED = "counted"  # a physical count: a scale, or the opening figures of a new item
    ADJUSTED = "adjusted"  # a correction by hand


@dataclass(frozen=True)
class Movement:
    """One ledger line: the change and the figures after it. The deltas of an item's lines, summed
    from its first, are its current stock and damaged quantities."""

    kind: MovementKind
    stock_delta: int
    damaged_delta: int
    stock_after: int
    damaged_after: int


def movement(kind: MovementKind, before: Stock, after: Stock) -> Movement | None:
    """The ledger line for a change from `before` to `after`, or None when neither figure moved
    (a threshold change is no movement)."""
    stock_delta = after.stock_quantity - before.stock_quantity
    damaged_delta = after.damaged_quantity - before.damaged_quantity
    if stock_delta == 0 and damaged_delta == 0:
        return None
    return Movement(kind, stock_delta, damaged_delta, after.stock_quantity, after.damaged_quantity)


def available_on(available_days: list[int], day: date) -> bool:
    """`available_days` holds ISO weekdays (1 = Monday … 7 = Sunday); empty means every day."""
    return not available_days or day.isoweekday() in available_days


def _positive(quantity: int) -> None:
    if quantity <= 0:
        raise DomainError(f"quantity must be positive, got {quantity}")


def refundable(total_cents: int, refunded_cents: int, amount_cents: int) -> None:
    _positive(amount_cents)
    if amount_cents > total_cents - refunded_cents:
        raise DomainError(f"refund of {amount_cents} exceeds the {total_cents - refunded_cents} cents left to refund")


def presence_applies(current_boot_id: str | None, state: str, boot_id: str | None) -> bool:
    """`online` always applies (a new run); `offline`/`lost` only for the run that is current.

    A Last Will of an earlier run can arrive after the device is back: it must not mark it lost.
    Without boot ids on both sides there is nothing to order by, and the message applies.
    """
    return state == "online" or current_boot_id is None or boot_id is None or current_boot_id == boot_id
