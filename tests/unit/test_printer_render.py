"""Ticket → ESC/POS bytes, compared byte for byte with the golden files in tests/golden/printer/.

After an intended change to the layout, regenerate them and review the diff (`ticket_text` shows
what a cook would read):

    ORDERBUS_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_printer_render.py
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

import pytest

from devices.ticket import parse_ticket
from devices.tickets_escpos import render
from tests.printer_emulator import ticket_text

GOLDEN = Path(__file__).parent.parent / "golden" / "printer"
REGENERATE = os.environ.get("ORDERBUS_REGENERATE_GOLDEN") == "1"

TICKET = {
    "id": 17,
    "kind": "new",
    "order_id": 311,
    "number": 12,
    "version": 1,
    "station": "grill",
    "created_at": "2026-11-28T19:42:00.123Z",
    "table_name": "T12",
    "pickup_name": None,
    "server_name": "Ana",
    "notes": "birthday: dessert with a candle",
    "items": [
        {"name": "Burger", "quantity": 2, "modifiers": ["no onion", "extra cheese"], "notes": "", "course": "mains"},
        {"name": "Chicken wings", "quantity": 1, "modifiers": [], "notes": "sauce on the side", "course": "starters"},
        {"name": "Ribeye", "quantity": 1, "modifiers": ["medium rare"], "notes": "", "course": "mains"},
    ],
}


ITEMS: list[dict] = TICKET["items"]  # type: ignore[assignment]


def ticket(**changes):
    return parse_ticket({**TICKET, **changes})


CASES = {
    "new": lambda: render(ticket(), tz=UTC),
    "void": lambda: render(ticket(kind="void"), tz=UTC),
    "reprint": lambda: render(ticket(kind="reprint"), tz=UTC),
    "maybe_printed": lambda: render(ticket(), reprint=True, tz=UTC),
    "backup": lambda: render(ticket(), backup_from="grill", tz=UTC),
    "pickup": lambda: render(ticket(table_name=None, pickup_name="Maria", server_name=None, notes=""), tz=UTC),
    # an edit's chits: ADD for lines added to the order, VOID (not VOIDED) for some lines only
    "add": lambda: render(ticket(version=2, partial=True, items=ITEMS[1:2]), tz=UTC),
    "partial_void": lambda: render(ticket(kind="void", version=2, partial=True, items=ITEMS[:1]), tz=UTC),
    "no_number": lambda: render(ticket(number=None), tz=UTC),  # from a bus older than order numbers
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_bytes_match_the_golden_file(case):
    data = CASES[case]()
    golden = GOLDEN / f"ticket_{case}.bin"
    if REGENERATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(data)
    assert golden.exists(), f"{golden} is missing; see this module's docstring to regenerate it"
    assert data == golden.read_bytes(), f"{case}: bytes differ from {golden.name}; text now:\n{ticket_text(data)}"


def test_an_edit_prints_add_and_void_chits_and_a_cancel_still_voids_the_whole_order():
    add = ticket_text(render(ticket(version=2, partial=True, items=ITEMS[1:2]), tz=UTC)).splitlines()
    assert add[0].strip() == "ADD" and "1 x Chicken wings" in add and "2 x Burger" not in add
    later = ticket_text(render(ticket(version=3), tz=UTC)).splitlines()  # a new ticket of a later version is an ADD
    assert later[0].strip() == "ADD"
    void = ticket_text(render(ticket(kind="void", version=2, partial=True, items=ITEMS[:1]), tz=UTC))
    assert [line.strip() for line in void.splitlines() if "VOID" in line] == ["VOID", "VOID"]
    cancel = ticket_text(render(ticket(kind="void", version=2), tz=UTC))
    assert [line.strip() for line in cancel.splitlines() if "VOID" in line] == ["VOIDED", "VOIDED"]
    assert "ADD" not in ticket_text(render(ticket(), tz=UTC)).splitlines()[0]


def test_a_ticket_starts_with_a_printer_reset_and_ends_with_a_feed_and_full_cut():
    data = render(ticket(), tz=UTC)
    assert data.startswith(b"\x1b@")
    assert data.endswith(b"\x1bd\x06\x1dV\x00")


def test_the_layout_has_what_the_kitchen_reads():
    text = ticket_text(render(ticket(), tz=UTC))
    lines = text.splitlines()
    assert lines[:3] == ["GRILL", "ORDER #12", "19:42  2026-11-28      order 311 ticket 17"]  # the number is called out
    assert "TABLE T12" in lines and "Server: Ana" in lines
    # grouped by course in order of first appearance, modifiers and notes indented under their item
    assert lines.index("-- MAINS --") < lines.index("2 x Burger") < lines.index("    + no onion")
    assert lines.index("    + extra cheese") < lines.index("1 x Ribeye") < lines.index("-- STARTERS --")
    assert lines[lines.index("1 x Chicken wings") + 1] == "    ! sauce on the side"
    assert "NOTE: birthday: dessert with a candle" in lines
    assert "REPRINT" not in text and "VOIDED" not in text and "BACKUP" not in text


@pytest.mark.parametrize(
    ("rendered", "labels"),
    [
        (lambda: render(ticket(kind="void"), tz=UTC), [" VOIDED "]),
        (lambda: render(ticket(kind="reprint"), tz=UTC), [" REPRINT "]),
        (lambda: render(ticket(), reprint=True, tz=UTC), [" REPRINT "]),
        (lambda: render(ticket(), backup_from="grill", tz=UTC), [" BACKUP FROM GRILL "]),
        (lambda: render(ticket(kind="void"), reprint=True, backup_from="grill", tz=UTC), [" VOIDED ", " REPRINT "]),
    ],
)
def test_labels_come_first_in_inverted_print(rendered, labels):
    lines = ticket_text(rendered()).splitlines()
    assert lines[: len(labels)] == labels
    assert b"\x1dB\x01" in rendered()  # GS B 1: white on black


def test_a_voided_ticket_says_so_at_both_ends():
    lines = ticket_text(render(ticket(kind="void"), tz=UTC)).splitlines()
    assert lines[0] == lines[-1] == " VOIDED "


def test_the_time_is_the_tickets_own_in_the_kitchens_zone():
    from datetime import timedelta, timezone

    text = ticket_text(render(ticket(), tz=timezone(timedelta(hours=-5))))
    assert "14:42  2026-11-28" in text
    assert render(ticket(), tz=UTC) == render(ticket(), tz=UTC)  # nothing depends on the clock


def test_control_characters_in_names_cannot_become_printer_commands():
    sneaky = ticket(
        table_name="T1\x1b@\x1dV\x00",
        items=[{"name": "Soup\x10\x04\x01\x1d(H", "quantity": 1, "modifiers": ["\x1bd\xff"], "notes": "a\nb"}],
    )
    data = render(sneaky, tz=UTC)
    body = data[2:-5]  # the reset and the cut are ours
    assert b"\x1b@" not in body and b"\x1dV" not in body and b"\x10\x04" not in body and b"\x1d(" not in body
    assert "a b" in ticket_text(data)


def test_long_names_wrap_within_the_paper_width():
    long_name = "Slow-roasted pork shoulder with apple and fennel slaw, extra crackling"
    text = ticket_text(render(ticket(items=[{"name": long_name, "quantity": 12}]), tz=UTC))
    lines = text.splitlines()
    assert all(len(line) <= 42 for line in lines)
    start = lines.index(next(line for line in lines if line.startswith("12 x Slow-roasted")))
    assert lines[start + 1].startswith("    ")
