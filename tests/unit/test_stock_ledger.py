"""core.domain's write-off and stock ledger: pure rules, and a property test that no sequence of stock
changes breaks stock conservation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import (
    DomainError,
    Movement,
    MovementKind,
    Stock,
    adjust,
    mark_damaged,
    movement,
    take,
    write_off,
)


def test_a_write_off_removes_damaged_units_from_stock_and_damaged_together():
    after = write_off(Stock(3, 3, 1), 3, "Burger")
    assert after == Stock(0, 0, 1)
    assert write_off(Stock(10, 4, None), 1, "Burger").available == Stock(10, 4, None).available


def test_what_adjust_refused_a_write_off_allows():
    """The issue's case: stock 3, all of it damaged; `adjust -3` is refused, a write-off of 3 is not."""
    with pytest.raises(DomainError):
        adjust(Stock(3, 3, None), -3, "Burger")
    assert write_off(Stock(3, 3, None), 3, "Burger") == Stock(0, 0, None)


@pytest.mark.parametrize("quantity", [4, 0, -1])
def test_a_write_off_of_more_than_is_damaged_or_of_nothing_is_refused(quantity):
    with pytest.raises(DomainError):
        write_off(Stock(10, 3, None), quantity, "Burger")


def test_a_movement_is_the_change_and_the_figures_after_it():
    assert movement(MovementKind.WRITTEN_OFF, Stock(10, 4, None), Stock(8, 2, None)) == Movement(
        MovementKind.WRITTEN_OFF, -2, -2, 8, 2
    )
    assert movement(MovementKind.ADJUSTED, Stock(10, 4, None), Stock(10, 4, 3)) is None  # a threshold moves nothing


# One step of a restaurant's day on one item: (what, how many). Returns give back what was sold.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["sell", "return", "damage", "write_off", "count", "adjust"]),
        st.integers(min_value=-30, max_value=30),
    ),
    max_size=60,
)


def apply_step(stock: Stock, sold: int, step: tuple[str, int]) -> tuple[MovementKind, Stock, int]:
    """The rule a step goes through, as the services call it; DomainError when the rule refuses."""
    what, n = step
    if what == "sell":
        return MovementKind.SOLD, take(stock, n, "x"), sold + n
    if what == "return":
        if not 0 < n <= sold:
            raise DomainError("only what was sold comes back")
        return MovementKind.RETURNED, adjust(stock, n, "x"), sold - n
    if what == "damage":
        return MovementKind.DAMAGED, mark_damaged(stock, n, "x"), sold
    if what == "write_off":
        return MovementKind.WRITTEN_OFF, write_off(stock, n, "x"), sold
    if what == "count":  # a scale reads `n` units more or less than the stock, never below zero
        return MovementKind.COUNTED, adjust(stock, max(0, stock.stock_quantity + n) - stock.stock_quantity, "x"), sold
    return MovementKind.ADJUSTED, adjust(stock, n, "x"), sold


@given(opening=st.integers(min_value=0, max_value=50), steps=STEPS)
def test_no_sequence_of_stock_changes_breaks_conservation(opening, steps):
    """Whatever happens, in any order, refused or not: available and damaged never go negative, and
    the ledger's deltas sum to the current figures (each line's `after` is the running sum)."""
    stock = Stock(0, 0, None)
    ledger: list[Movement] = []
    first = movement(MovementKind.COUNTED, stock, Stock(opening, 0, None))  # a new item's opening count
    stock = Stock(opening, 0, None)
    ledger += [first] if first else []
    sold = 0
    for step in steps:
        try:
            kind, after, sold_after = apply_step(stock, sold, step)
        except DomainError:
            continue  # refused: nothing changes, nothing is written
        line = movement(kind, stock, after)
        stock, sold = after, sold_after
        if line is not None:
            ledger.append(line)
        assert stock.available >= 0 and stock.damaged_quantity >= 0
        running = (sum(m.stock_delta for m in ledger), sum(m.damaged_delta for m in ledger))
        assert running == (stock.stock_quantity, stock.damaged_quantity)
        last = (ledger[-1].stock_after, ledger[-1].damaged_after) if ledger else (0, 0)
        assert last == running
    assert all(m.stock_delta or m.damaged_delta for m in ledger)  # no empty lines
    assert sum(m.stock_delta for m in ledger) == stock.stock_quantity
    assert sum(m.damaged_delta for m in ledger) == stock.damaged_quantity
