"""What a kitchen printer's reports mean: the problem that stops it printing, and how the kitchen hears of it.

A station has a primary printer and may have a backup that takes over its tickets; each reports
its own status (docs/devices.md, "Printers").
"""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import Invalid

PRINTERS = frozenset({"primary", "backup"})
PAPER_STATES = frozenset({"ok", "near_end", "out"})
FAILURE_REASONS = frozenset({"offline", "paper_out", "cover_open", "error"})  # why a ticket did not print


@dataclass(frozen=True)
class PrinterStatus:
    online: bool
    paper: str  # one of PAPER_STATES
    cover_open: bool = False
    error: bool = False


def problem_of(status: PrinterStatus) -> str | None:
    """What stops this printer printing, in words for the kitchen; None when it can print."""
    if status.cover_open:  # most specific first: a printer out of paper also says it is offline
        return "cover open"
    if status.paper == "out":
        return "paper out"
    if status.error:
        return "printer error"
    return None if status.online else "offline"


def problem_notice(name: str, station: str | None, which: str, problem: str) -> tuple[str, str]:
    """The title and body of the kitchen's notification of `problem` on printer `which` of a station."""
    if which == "primary":
        return (
            f"{name}: {problem}",
            f"the {station} printer reports {problem}; tickets go to its backup if it has one",
        )
    return (
        f"{name} backup: {problem}",
        f"the {station} backup printer reports {problem}; it cannot take over until fixed",
    )


def check_station(ticket_id: int, ticket_station: str, printer_station: str | None) -> None:
    """Invalid `wrong_station` when a printer reports on a ticket of another station."""
    if ticket_station != printer_station:
        raise Invalid("wrong_station", f"ticket {ticket_id} is for {ticket_station}, not {printer_station}")
