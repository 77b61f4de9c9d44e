"""The pure rules of an order edit: the lines after, the stock moved, the chits per station."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import DomainError, NotFound
from core.rules.order_changes import Change, Line, Removal, changed_lines, chits, edited_lines, stock_moves, total_cents

BURGER = Line(id=1, menu_item_id=10, name="Burger", quantity=3, unit_price_cents=1200, station="grill")
SPRITZ = Line(id=2, menu_item_id=20, name="Spritz", quantity=1, unit_price_cents=700, station="bar")
BREAD = Line(id=3, menu_item_id=30, name="Bread", quantity=1, unit_price_cents=300)
BEFORE = [BURGER, SPRITZ, BREAD]


def test_reducing_removing_changing_and_adding():
    extra = Line(id=None, menu_item_id=20, name="Spritz", quantity=2, unit_price_cents=700, station="bar")
    after = edited_lines(BEFORE, [Removal(1, 1), Removal(2, 1)], [Change(3, modifiers=("toasted",))], [extra])
    assert [(line.id, line.quantity, line.modifiers) for line in after] == [
        (1, 2, ()),
        (3, 1, ("toasted",)),
        (None, 2, ()),
    ]
    assert stock_moves(BEFORE, after) == {10: -1, 20: 1}  # bread did not move: same item, same quantity
    assert total_cents(after) == 2 * 1200 + 300 + 2 * 700
    gone, came = changed_lines(BEFORE, after)
    assert [line.id for line in gone] == [1, 2, 3] and [line.id for line in came] == [1, 3, None]


def test_chits_go_to_the_stations_touched_only():
    after = [
        BURGER,
        Line(id=3, menu_item_id=30, name="Bread", quantity=1, unit_price_cents=300, notes="warm"),
        Line(id=4, menu_item_id=20, name="Spritz", quantity=2, station="bar"),
    ]
    found = chits([BURGER, BREAD], after)
    assert set(found) == {"kitchen", "bar"}  # the grill's burger did not change: no chit for the grill
    assert [(line.name, line.quantity, line.notes) for line in found["kitchen"].voided] == [("Bread", 1, "")]
    assert [(line.name, line.quantity, line.notes) for line in found["kitchen"].added] == [("Bread", 1, "warm")]
    assert found["bar"].voided == [] and [line.quantity for line in found["bar"].added] == [2]


def test_a_reduced_line_voids_the_difference_and_a_raised_one_adds_it():
    less = chits([BURGER], [Line(**{**BURGER.__dict__, "quantity": 1})])
    assert [line.quantity for line in less["grill"].voided] == [2] and less["grill"].added == []
    more = chits([BURGER], [Line(**{**BURGER.__dict__, "quantity": 5})])
    assert [line.quantity for line in more["grill"].added] == [2] and more["grill"].voided == []


def test_refusals():
    with pytest.raises(NotFound):
        edited_lines(BEFORE, [Removal(9, 1)], [], [])
    with pytest.raises(NotFound):
        edited_lines(BEFORE, [], [Change(9, notes="x")], [])
    with pytest.raises(DomainError, match="cannot remove more"):
        edited_lines(BEFORE, [Removal(1, 2), Removal(1, 2)], [], [])
    with pytest.raises(DomainError, match="cannot also change"):
        edited_lines(BEFORE, [Removal(2, 1)], [Change(2, notes="x")], [])


lines = st.lists(
    st.builds(
        Line,
        id=st.none(),
        menu_item_id=st.integers(1, 4),
        name=st.just("X"),
        quantity=st.integers(1, 5),
        modifiers=st.lists(st.sampled_from(["a", "b"]), max_size=1).map(tuple),
        station=st.sampled_from([None, "grill", "bar"]),
    ),
    max_size=5,
)


@given(lines, st.lists(st.tuples(st.integers(0, 4), st.integers(1, 5)), max_size=5), lines)
def test_stock_moved_is_what_the_chits_add_less_what_they_void(placed, removals, added):
    """Conservation: what the stock moves per item equals the ADD chits minus the VOID chits."""
    before = [Line(**{**line.__dict__, "id": index + 1}) for index, line in enumerate(placed)]
    wanted = [Removal(index + 1, qty) for index, qty in removals if index < len(before)]
    try:
        after = edited_lines(before, wanted, [], added)
    except DomainError:
        return
    after = [line if line.id is not None else Line(**{**line.__dict__, "id": 100 + i}) for i, line in enumerate(after)]
    net: dict[int, int] = {}
    for chit in chits(before, after).values():
        for line in chit.added:
            net[line.menu_item_id] = net.get(line.menu_item_id, 0) + line.quantity
        for line in chit.voided:
            net[line.menu_item_id] = net.get(line.menu_item_id, 0) - line.quantity
    assert {item: qty for item, qty in net.items() if qty} == stock_moves(before, after)
    assert all(line.quantity > 0 for line in after)
