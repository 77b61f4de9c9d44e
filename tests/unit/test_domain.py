"""core.domain: order transitions and stock arithmetic, as pure functions."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import (
    OPEN_STATUSES,
    DomainError,
    NotFound,
    OrderStatus,
    Stock,
    adjust,
    available_on,
    check_transition,
    is_open,
    low_stock_alarm,
    mark_damaged,
    refundable,
    take,
)

S = OrderStatus
ALLOWED = {
    (S.PENDING, S.PREPARING),
    (S.PENDING, S.CANCELLED),
    (S.PREPARING, S.READY),
    (S.PREPARING, S.CANCELLED),
    (S.READY, S.COMPLETED),
    (S.READY, S.CANCELLED),
}
ALL_PAIRS = list(itertools.product(OrderStatus, repeat=2))


def test_domain_errors_know_nothing_of_http():
    """The transport maps errors to its own codes (HTTP 404/409, device reasons); the core carries none."""
    assert issubclass(NotFound, DomainError)
    assert not hasattr(DomainError, "code") and not hasattr(NotFound, "code")


@pytest.mark.parametrize(("current", "new"), sorted(ALLOWED))
def test_allowed_transitions(current, new):
    assert check_transition(current.value, new.value) is new
    assert check_transition(current, new) is new


@pytest.mark.parametrize(("current", "new"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_forbidden_transitions(current, new):
    with pytest.raises(DomainError, match=f"{current.value} cannot become {new.value}"):
        check_transition(current.value, new.value)


def test_transition_table_is_complete():
    assert len(ALL_PAIRS) == 25
    assert len(ALLOWED) == 6


@pytest.mark.parametrize("status", [S.COMPLETED, S.CANCELLED])
def test_closed_orders_are_final(status):
    for target in OrderStatus:
        with pytest.raises(DomainError):
            check_transition(status, target)


@pytest.mark.parametrize(("current", "new"), [("pending", "shipped"), ("lost", "pending"), ("Pending", "preparing")])
def test_unknown_statuses_are_refused(current, new):
    with pytest.raises(DomainError, match="unknown order status"):
        check_transition(current, new)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("pending", True), ("preparing", True), ("ready", True), ("completed", False), ("cancelled", False)],
)
def test_is_open(status, expected):
    assert is_open(status) is expected
    assert (OrderStatus(status) in OPEN_STATUSES) is expected


# ---------------------------------------------------------------------------------------------
# stock


@pytest.mark.parametrize(("stock", "damaged", "available"), [(10, 0, 10), (10, 3, 7), (5, 5, 0), (0, 0, 0)])
def test_available(stock, damaged, available):
    assert Stock(stock, damaged, None).available == available


@pytest.mark.parametrize(
    ("before", "after", "fires"),
    [
        (Stock(10, 0, 5), Stock(6, 0, 5), False),  # still above
        (Stock(10, 0, 5), Stock(5, 0, 5), True),  # onto the threshold
        (Stock(10, 0, 5), Stock(2, 0, 5), True),  # through it
        (Stock(6, 0, 5), Stock(0, 0, 5), True),
        (Stock(10, 0, 5), Stock(10, 5, 5), True),  # damaged goods count: available is 5
        (Stock(5, 0, 5), Stock(4, 0, 5), False),  # already low: once per crossing
        (Stock(3, 0, 5), Stock(1, 0, 5), False),
        (Stock(3, 0, 5), Stock(3, 0, 5), False),
        (Stock(4, 0, 5), Stock(9, 0, 5), False),  # going up
        (Stock(10, 0, None), Stock(0, 0, None), False),  # no threshold, no alert
        (Stock(10, 0, 5), Stock(0, 0, None), False),  # threshold removed
        (Stock(3, 0, None), Stock(3, 0, 5), True),  # threshold set above what is left
        (Stock(1, 0, 0), Stock(0, 0, 0), True),  # threshold 0: alert at zero
        (Stock(0, 0, 0), Stock(0, 0, 0), False),
    ],
)
def test_crossed_into_low_stock(before, after, fires):
    assert crossed_into_low_stock(before, after) is fires


def crossed_into_low_stock(before: Stock, after: Stock) -> bool:
    """Without a clear level the alarm is raised exactly on a downward crossing of the threshold."""
    return low_stock_alarm(after, alerted=before.is_low()).fire


def test_hysteresis_alerts_once_while_wobbling_inside_the_band():
    alerted, fired = False, 0
    for available in [6, 5, 6, 5, 6, 7, 5, 4, 7]:  # threshold 5, clear above 7
        alarm = low_stock_alarm(Stock(available, 0, 5), alerted, clear_level=7)
        fired += alarm.fire
        alerted = alarm.alerted
    assert fired == 1
    alarm = low_stock_alarm(Stock(8, 0, 5), alerted, clear_level=7)  # above the clear level: re-armed
    assert (alarm.fire, alarm.alerted) == (False, False)
    assert low_stock_alarm(Stock(5, 0, 5), alarm.alerted, clear_level=7).fire


def test_a_clear_level_below_the_threshold_counts_as_the_threshold():
    assert low_stock_alarm(Stock(6, 0, 5), alerted=True, clear_level=2).alerted is False
    assert low_stock_alarm(Stock(0, 0, None), alerted=True).alerted is False


def test_is_low():
    assert Stock(5, 0, 5).is_low()
    assert not Stock(6, 0, 5).is_low()
    assert Stock(6, 1, 5).is_low()
    assert not Stock(0, 0, None).is_low()


def test_take():
    assert take(Stock(10, 2, 3), 5, "fries") == Stock(5, 2, 3)
    assert take(Stock(10, 2, 3), 8, "fries") == Stock(2, 2, 3)  # everything available


@pytest.mark.parametrize(("stock", "quantity"), [(Stock(10, 2, 3), 9), (Stock(0, 0, None), 1), (Stock(5, 5, 1), 1)])
def test_take_refuses_more_than_available_and_changes_nothing(stock, quantity):
    copy = Stock(stock.stock_quantity, stock.damaged_quantity, stock.low_stock_threshold)
    with pytest.raises(DomainError, match=f"not enough fries: {stock.available} available, {quantity} ordered"):
        take(stock, quantity, "fries")
    assert stock == copy


def test_stock_is_immutable():
    stock = Stock(1, 0, None)
    with pytest.raises(AttributeError):
        stock.stock_quantity = 2  # type: ignore[misc]  # the point: mypy and the frozen dataclass both refuse it


def test_mark_damaged_raises_damaged_only():
    before = Stock(10, 1, 3)
    after = mark_damaged(before, 4, "buns")
    assert after == Stock(10, 5, 3)
    assert after.stock_quantity == before.stock_quantity
    assert after.available == before.available - 4


def test_mark_damaged_everything_available():
    assert mark_damaged(Stock(10, 1, None), 9, "buns") == Stock(10, 10, None)


def test_mark_damaged_refuses_more_than_available():
    stock = Stock(10, 8, None)
    with pytest.raises(DomainError, match="cannot mark 3 buns damaged: 2 available"):
        mark_damaged(stock, 3, "buns")
    assert stock == Stock(10, 8, None)


def test_adjust():
    assert adjust(Stock(10, 2, 3), 5, "cola") == Stock(15, 2, 3)  # a delivery
    assert adjust(Stock(10, 2, 3), -4, "cola") == Stock(6, 2, 3)  # a count correction
    assert adjust(Stock(10, 2, 3), -8, "cola") == Stock(2, 2, 3)  # down to exactly the damaged
    assert adjust(Stock(10, 2, 3), 0, "cola") == Stock(10, 2, 3)


@pytest.mark.parametrize(("stock", "delta"), [(Stock(10, 2, 3), -9), (Stock(0, 0, None), -1), (Stock(4, 4, None), -1)])
def test_adjust_cannot_go_below_damaged(stock, delta):
    with pytest.raises(DomainError, match=f"cannot remove {-delta} cola: only {stock.available} available"):
        adjust(stock, delta, "cola")


stocks = st.builds(
    lambda stock, damaged, threshold: Stock(stock, min(damaged, stock), threshold),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.none() | st.integers(0, 1000),
)


@given(stocks, st.integers(1, 2000))
def test_take_property(stock, quantity):
    try:
        after = take(stock, quantity, "x")
    except DomainError:
        assert quantity > stock.available
    else:
        assert after.available == stock.available - quantity >= 0
        assert after.damaged_quantity == stock.damaged_quantity
        assert after.low_stock_threshold == stock.low_stock_threshold


@given(stocks, st.integers(1, 2000))
def test_mark_damaged_property(stock, quantity):
    try:
        after = mark_damaged(stock, quantity, "x")
    except DomainError:
        assert quantity > stock.available
    else:
        assert after.stock_quantity == stock.stock_quantity
        assert after.damaged_quantity == stock.damaged_quantity + quantity
        assert 0 <= after.available == stock.available - quantity


@given(stocks, st.integers(-2000, 2000))
def test_adjust_property(stock, delta):
    try:
        after = adjust(stock, delta, "x")
    except DomainError:
        assert stock.stock_quantity + delta < stock.damaged_quantity
    else:
        assert after.available >= 0
        assert after.stock_quantity == stock.stock_quantity + delta
        assert after.damaged_quantity == stock.damaged_quantity


@given(stocks, st.integers(1, 2000))
def test_a_crossing_alerts_at_most_once(stock, quantity):
    """Selling in single units: the alert fires on exactly one step, when the threshold exists."""
    fired = 0
    current = stock
    for _ in range(min(quantity, stock.available)):
        after = take(current, 1, "x")
        fired += crossed_into_low_stock(current, after)
        current = after
    assert fired <= 1
    if stock.low_stock_threshold is not None and not stock.is_low() and current.is_low():
        assert fired == 1
    if stock.low_stock_threshold is None:
        assert fired == 0


# ---------------------------------------------------------------------------------------------
# available_on, refundable

MONDAY = date(2026, 11, 30)
WEEK = [MONDAY + timedelta(days=offset) for offset in range(7)]


def test_monday_is_iso_weekday_one():
    assert MONDAY.isoweekday() == 1


def test_empty_list_means_every_day():
    assert all(available_on([], day) for day in WEEK)


@pytest.mark.parametrize("weekday", range(1, 8))
def test_a_single_weekday(weekday):
    assert [day.isoweekday() for day in WEEK if available_on([weekday], day)] == [weekday]


def test_weekend_and_sunday_is_seven():
    sunday = MONDAY + timedelta(days=6)
    assert available_on([7], sunday)
    assert not available_on([0], sunday)  # not Python's 0-based weekday()
    assert [day for day in WEEK if available_on([6, 7], day)] == WEEK[5:]
    assert not available_on([1, 2, 3, 4, 5], sunday)


def test_all_seven_days():
    assert all(available_on([1, 2, 3, 4, 5, 6, 7], day) for day in WEEK)


@pytest.mark.parametrize(
    ("total", "refunded", "amount"), [(1000, 0, 1000), (1000, 0, 1), (1000, 400, 600), (1000, 999, 1)]
)
def test_refundable(total, refunded, amount):
    refundable(total, refunded, amount)  # raises when the amount cannot be refunded


@pytest.mark.parametrize(
    ("total", "refunded", "amount"), [(1000, 0, 1001), (1000, 400, 601), (1000, 1000, 1), (0, 0, 1)]
)
def test_not_refundable(total, refunded, amount):
    with pytest.raises(DomainError, match=f"exceeds the {total - refunded} cents left"):
        refundable(total, refunded, amount)


@pytest.mark.parametrize("quantity", [0, -1, -50])
def test_non_positive_quantities_are_refused(quantity):
    stock = Stock(10, 2, 3)
    with pytest.raises(DomainError, match="positive"):
        take(stock, quantity, "Burger")
    with pytest.raises(DomainError, match="positive"):
        mark_damaged(stock, quantity, "Burger")
    with pytest.raises(DomainError, match="positive"):
        refundable(1000, 0, quantity)
