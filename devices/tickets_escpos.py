"""A ticket → the ESC/POS bytes a kitchen printer gets, rendered with python-escpos.

Pure and deterministic (the time printed is the ticket's `created_at`, never "now"), so the
output can be compared byte for byte with a golden file. The profile must have a cutter:
TM-U220's profile has none and `cut()` would send nothing, leaving tickets joined on the roll.
"""

from __future__ import annotations

import textwrap
import unicodedata
from datetime import tzinfo

from escpos.printer import Dummy

from devices.ticket import Item, Ticket

PROFILE = "TM-T88V"  # 80 mm, 42 columns in font A, full and partial cut
COLUMNS = 42
RULE = "-" * COLUMNS


def render(ticket: Ticket, *, reprint: bool = False, backup_from: str | None = None, tz: tzinfo | None = None) -> bytes:
    """The whole ticket, from printer reset to cut.

    An edit's chits (`ticket.partial`) say ADD (cook these too) or VOID (stop these, the rest of the
    order stands) above the lines they carry, as a real kitchen's slips do.
    `reprint`: this ticket may have printed before (a `reprint` ticket always is one).
    `backup_from`: the station whose printer failed, when this is its backup printing.
    `tz`: the kitchen's time zone for the printed time (the agent's local zone by default).
    """
    out = Dummy(profile=PROFILE)
    out.hw("INIT")  # a job cut off half-way must not leave its styles (inverted, double size) to this one
    labels = []
    if ticket.kind == "void":
        labels.append(_void_label(ticket))
    if ticket.is_add:
        labels.append("ADD")
    if reprint or ticket.kind == "reprint":
        labels.append("REPRINT")
    if backup_from is not None:
        labels.append(f"BACKUP FROM {clean(backup_from).upper()}")
    for label in labels:
        _banner(out, label)
    _header(out, ticket, tz)
    _items(out, ticket.items)
    if ticket.notes.strip():
        out.set(bold=True)
        _wrapped(out, ticket.notes, first="NOTE: ", indent="      ")
        out.set(bold=False)
        out.textln(RULE)
    if ticket.kind == "void":
        _banner(out, _void_label(ticket))  # at both ends: a cook reading from the bottom must not start a voided ticket
    out.cut()
    return out.output


def _void_label(ticket: Ticket) -> str:
    """VOIDED: stop the whole order (it was cancelled); VOID: stop these lines only, the rest stands."""
    return "VOID" if ticket.partial else "VOIDED"


def clean(text: str) -> str:
    """Printable text only: a control character in a name (ESC, GS) would be a printer command."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)


def _banner(out: Dummy, label: str) -> None:
    big = len(label) <= COLUMNS // 2
    out.set(align="center", bold=True, invert=True, double_width=big, double_height=True)
    out.textln(f" {label} ")
    out.set(align="left", bold=False, invert=False, normal_textsize=True)


def _header(out: Dummy, ticket: Ticket, tz: tzinfo | None) -> None:
    moment = ticket.created_at.astimezone(tz)
    out.set(align="center", bold=True, double_width=True, double_height=True)
    out.textln(clean(ticket.station).upper()[: COLUMNS // 2])
    out.textln(f"ORDER #{ticket.number or ticket.order_id}")
    out.set(align="left", bold=False, normal_textsize=True)
    out.textln(_columns(moment.strftime("%H:%M  %Y-%m-%d"), _reference(ticket)))
    out.set(bold=True, double_height=True)
    if ticket.table_name:
        out.textln(f"TABLE {clean(ticket.table_name)}")
    if ticket.pickup_name:
        out.textln(f"PICKUP {clean(ticket.pickup_name)}")
    out.set(bold=False, normal_textsize=True)
    if ticket.server_name:
        out.textln(f"Server: {clean(ticket.server_name)}")
    out.textln(RULE)


def _reference(ticket: Ticket) -> str:
    """The ids a manager looks up in the API; the number above is what the kitchen calls out."""
    return f"ticket {ticket.id}" if ticket.number is None else f"order {ticket.order_id} ticket {ticket.id}"


def _items(out: Dummy, items: tuple[Item, ...]) -> None:
    """Grouped by course in the order courses first appear; quantities big, modifiers and notes indented."""
    courses: dict[str | None, list[Item]] = {}
    for item in items:
        courses.setdefault(item.course, []).append(item)
    for course, course_items in courses.items():
        if course:
            out.set(bold=True)
            out.textln(f"-- {clean(course).upper()} --")
            out.set(bold=False)
        for item in course_items:
            out.set(bold=True, double_height=True)
            _wrapped(out, item.name, first=f"{item.quantity} x ", indent="    ")
            out.set(bold=False, normal_textsize=True)
            for modifier in item.modifiers:
                _wrapped(out, modifier, first="    + ", indent="      ")
            if item.notes.strip():
                _wrapped(out, item.notes, first="    ! ", indent="      ")
    out.textln(RULE)


def _wrapped(out: Dummy, text: str, *, first: str = "", indent: str = "") -> None:
    """Word-wrapped to the paper width; line breaks in the text become spaces (they are not commands)."""
    for line in textwrap.wrap(clean(text), COLUMNS, initial_indent=first, subsequent_indent=indent) or [first]:
        out.textln(line)


def _columns(left: str, right: str) -> str:
    return left + " " * max(1, COLUMNS - len(left) - len(right)) + right
