"""What "paid" means, and how much of a paid order may still be refunded, as pure functions.

"Paid" is kept simple on purpose: orderbus is no payment terminal. Staff say an order was paid
(`POST …/orders/{id}/pay`), which stamps `Order.paid_at` once; everything else is derived from
that stamp and the order's figures:

- `unpaid`: no `paid_at` (nothing may be refunded, whatever the order's status);
- `paid`: paid, nothing refunded;
- `partially_refunded`: paid, some but not all of the total refunded;
- `refunded`: paid, the whole total refunded.

A cancelled order cannot be paid (nobody pays for a cancelled order); one that was paid before it
was cancelled can be refunded, which is how its money goes back. Paying twice is refused: the
first payment's stamp is the record, a second one would hide a double charge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.domain import DomainError, OrderStatus, refundable


class PaymentStatus(StrEnum):
    UNPAID = "unpaid"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


def payment_status(paid_at: datetime | None, total_cents: int, refunded_cents: int) -> PaymentStatus:
    """The order's payment status, derived from its stamp and figures (never stored, so never stale)."""
    if paid_at is None:
        return PaymentStatus.UNPAID
    if refunded_cents <= 0:
        return PaymentStatus.PAID
    if refunded_cents >= total_cents:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED


def check_payable(status: str, paid_at: datetime | None) -> None:
    """DomainError for an order that was paid already or is cancelled."""
    if paid_at is not None:
        raise DomainError("this order was paid already")
    if status == OrderStatus.CANCELLED:
        raise DomainError("a cancelled order cannot be paid")


def refundable_cents(paid_at: datetime | None, total_cents: int, refunded_cents: int) -> int:
    """What is left to refund: nothing on an unpaid order, else the total less what was refunded."""
    return 0 if paid_at is None else max(total_cents - refunded_cents, 0)


@dataclass(frozen=True)
class OrderedLine:
    """One line of the order, as the refund rules see it."""

    id: int
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class LineRefund:
    """Units of one order line given back by a refund."""

    order_item_id: int
    quantity: int


def already_refunded(previous: Iterable[Iterable[LineRefund]]) -> dict[int, int]:
    """Units refunded so far per order line, over the lines of every earlier refund."""
    done: dict[int, int] = {}
    for lines in previous:
        for line in lines:
            done[line.order_item_id] = done.get(line.order_item_id, 0) + line.quantity
    return done


def check_lines(ordered: Mapping[int, OrderedLine], done: Mapping[int, int], wanted: Iterable[LineRefund]) -> int:
    """The value of the refunded lines, or DomainError for a line that is not the order's, or more
    units than were ordered less those refunded before. A line named twice counts as one."""
    wanted_units: dict[int, int] = {}
    for refund in wanted:
        if refund.quantity <= 0:
            raise DomainError(f"quantity must be positive, got {refund.quantity}")
        wanted_units[refund.order_item_id] = wanted_units.get(refund.order_item_id, 0) + refund.quantity
    value = 0
    for line_id, quantity in sorted(wanted_units.items()):
        line = ordered.get(line_id)
        if line is None:
            raise DomainError(f"order line {line_id} is not a line of this order")
        left = line.quantity - done.get(line_id, 0)
        if quantity > left:
            raise DomainError(f"order line {line_id}: {quantity} to refund, only {max(left, 0)} not refunded yet")
        value += quantity * line.unit_price_cents
    return value


def refund_amount(
    paid_at: datetime | None, total_cents: int, refunded_cents: int, amount_cents: int | None, lines_value: int | None
) -> int:
    """The amount a refund gives back, or DomainError.

    Refused on an unpaid order (a cancelled one that was never paid included). With lines, the amount
    defaults to their value and may not exceed it (a goodwill refund of part of a dish is fine, more
    than the dish is not); either way never more than is left to refund."""
    if paid_at is None:
        raise DomainError("this order was never paid: there is nothing to refund")
    if amount_cents is None:
        if lines_value is None:
            raise DomainError("a refund needs an amount or lines")
        amount_cents = lines_value
    elif lines_value is not None and amount_cents > lines_value:
        raise DomainError(f"refund of {amount_cents} exceeds the {lines_value} cents of the lines refunded")
    refundable(total_cents, refunded_cents, amount_cents)
    return amount_cents
