"""The payment rules (core.rules.payments): what "paid" means, and how much may still be refunded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import DomainError, OrderStatus
from core.rules.payments import (
    LineRefund,
    OrderedLine,
    PaymentStatus,
    already_refunded,
    check_lines,
    check_payable,
    payment_status,
    refund_amount,
    refundable_cents,
)

PAID = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LINES = {1: OrderedLine(1, 2, 500), 2: OrderedLine(2, 1, 900)}  # 2 burgers at 5.00, 1 wine at 9.00


@pytest.mark.parametrize(
    ("paid_at", "refunded", "status"),
    [
        (None, 0, PaymentStatus.UNPAID),
        (None, 300, PaymentStatus.UNPAID),  # no stamp, no payment, whatever the figures say
        (PAID, 0, PaymentStatus.PAID),
        (PAID, 1, PaymentStatus.PARTIALLY_REFUNDED),
        (PAID, 1899, PaymentStatus.PARTIALLY_REFUNDED),
        (PAID, 1900, PaymentStatus.REFUNDED),
    ],
)
def test_payment_status_is_derived_from_the_stamp_and_the_figures(paid_at, refunded, status):
    assert payment_status(paid_at, 1900, refunded) == status


def test_a_free_order_that_was_paid_is_paid_not_refunded():
    assert payment_status(PAID, 0, 0) == PaymentStatus.PAID


@pytest.mark.parametrize("status", [s for s in OrderStatus if s != OrderStatus.CANCELLED])
def test_an_unpaid_order_that_is_not_cancelled_may_be_paid(status):
    check_payable(status, None)


def test_paying_twice_or_a_cancelled_order_is_refused():
    with pytest.raises(DomainError, match="paid already"):
        check_payable(OrderStatus.COMPLETED, PAID)
    with pytest.raises(DomainError, match="cancelled order cannot be paid"):
        check_payable(OrderStatus.CANCELLED, None)


@pytest.mark.parametrize("status", list(OrderStatus))
def test_an_unpaid_order_is_never_refundable_whatever_its_status(status):
    """A cancelled order that was never paid included: nothing was taken, nothing goes back."""
    assert refundable_cents(None, 1900, 0) == 0
    with pytest.raises(DomainError, match="never paid"):
        refund_amount(None, 1900, 0, 100, None)


def test_an_amount_is_bounded_by_what_is_left():
    assert refund_amount(PAID, 1900, 400, 1500, None) == 1500
    with pytest.raises(DomainError, match="exceeds the 1500 cents left"):
        refund_amount(PAID, 1900, 400, 1501, None)


def test_lines_give_the_amount_and_bound_it():
    value = check_lines(LINES, {}, [LineRefund(1, 1), LineRefund(2, 1)])
    assert value == 1400
    assert refund_amount(PAID, 1900, 0, None, value) == 1400  # the lines' value by default
    assert refund_amount(PAID, 1900, 0, 700, value) == 700  # less than the lines: a goodwill part
    with pytest.raises(DomainError, match="exceeds the 1400 cents of the lines"):
        refund_amount(PAID, 1900, 0, 1401, value)
    with pytest.raises(DomainError, match="an amount or lines"):
        refund_amount(PAID, 1900, 0, None, None)


def test_a_line_is_refunded_at_most_as_many_times_as_it_was_ordered():
    done = already_refunded([[LineRefund(1, 1)], [LineRefund(1, 1), LineRefund(2, 1)]])
    assert done == {1: 2, 2: 1}
    with pytest.raises(DomainError, match="order line 1: 1 to refund, only 0 not refunded yet"):
        check_lines(LINES, done, [LineRefund(1, 1)])
    with pytest.raises(DomainError, match="order line 1: 3 to refund, only 2"):
        check_lines(LINES, {}, [LineRefund(1, 2), LineRefund(1, 1)])  # named twice: added up


def test_a_line_of_another_order_or_no_units_is_refused():
    with pytest.raises(DomainError, match="order line 7 is not a line of this order"):
        check_lines(LINES, {}, [LineRefund(7, 1)])
    with pytest.raises(DomainError, match="quantity must be positive"):
        check_lines(LINES, {}, [LineRefund(1, 0)])


@st.composite
def refund_attempts(draw):
    lines = draw(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 2_000)), min_size=1, max_size=4))
    ordered = {i: OrderedLine(i, quantity, price) for i, (quantity, price) in enumerate(lines, start=1)}
    attempts = draw(
        st.lists(
            st.tuples(
                st.none() | st.integers(-5, 12_000),
                st.lists(st.tuples(st.integers(1, len(lines) + 1), st.integers(0, 6)), max_size=3),
            ),
            max_size=12,
        )
    )
    return ordered, attempts


@given(refund_attempts(), st.booleans())
def test_any_sequence_of_refunds_never_exceeds_the_total_nor_a_line(case, paid):
    """Whatever refunds are asked for, those the rules let through sum to at most the total, give back
    at most each line's units, and none goes through on an unpaid order."""
    ordered, attempts = case
    total = sum(line.quantity * line.unit_price_cents for line in ordered.values())
    paid_at = PAID if paid else None
    refunded, history = 0, list[list[LineRefund]]()
    for amount, wanted in attempts:
        lines = [LineRefund(line_id, quantity) for line_id, quantity in wanted]
        try:
            value = check_lines(ordered, already_refunded(history), lines) if lines else None
            granted = refund_amount(paid_at, total, refunded, amount, value)
        except DomainError:
            continue
        assert granted > 0
        refunded += granted
        history.append(lines)
        assert refunded <= total
        assert payment_status(paid_at, total, refunded) in (PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)
    done = already_refunded(history)
    assert all(done.get(line_id, 0) <= line.quantity for line_id, line in ordered.items())
    assert refundable_cents(paid_at, total, refunded) == (total - refunded if paid else 0)
    if not paid:
        assert refunded == 0
