"""Printer reports → ticket outcomes and printer-problem notifications (docs/devices.md).

The shape of a report is checked here; what a status means, and the kitchen's notice of it, are
`core.rules.printers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.ingest import DeviceMessage, Rejected
from bridge.sweeper import Sweep
from core.models import Device, utcnow
from core.rules.printers import (
    FAILURE_REASONS,
    PAPER_STATES,
    PRINTERS,
    PrinterStatus,
    check_station,
    problem_notice,
    problem_of,
)
from core.services import tickets
from core.services.inventory import notify
from core.unit_of_work import UnitOfWork


class PrinterEvents:
    """Handles ("events", "printer"); remembers each printer's last status so a problem notifies once."""

    def __init__(self) -> None:
        self._problems: dict[tuple[str, str], str | None] = {}  # (device id, primary|backup) → problem
        self._lock = threading.Lock()

    def __call__(self, uow: UnitOfWork, device: Device, message: DeviceMessage) -> dict[str, Any] | None:
        body = message.body
        kind = body.get("type")
        if kind == "printer_status":
            self._status(uow, device, body)
            return None
        if kind not in ("printed", "failed"):
            raise Rejected("bad_type", "type must be printed, failed or printer_status")
        ticket_id = body.get("ticket_id")
        if type(ticket_id) is not int:
            raise Rejected("bad_type", "ticket_id must be an integer")
        ticket = tickets.get_ticket(uow, device.restaurant_id, ticket_id)
        check_station(ticket_id, ticket.station, device.station)
        if kind == "printed":
            if body.get("printer", "primary") not in PRINTERS:
                raise Rejected("bad_type", "printer must be primary or backup")
            tickets.record_printed(uow, ticket, device.id)
        else:
            reason, detail = body.get("reason"), body.get("detail", "")
            if reason not in FAILURE_REASONS or not isinstance(detail, str):
                raise Rejected("bad_type", f"reason must be one of {sorted(FAILURE_REASONS)}, detail a string")
            tickets.record_failed(uow, ticket, device.id, reason, detail)
        return None

    def _status(self, uow: UnitOfWork, device: Device, body: dict[str, Any]) -> None:
        problem = problem_of(parse_status(body))
        which = body.get("printer", "primary")
        if which not in PRINTERS:
            raise Rejected("bad_type", "printer must be primary or backup")
        with self._lock:
            previous = self._problems.get((device.id, which))
            self._problems[(device.id, which)] = problem
        if problem is None or problem == previous:  # news once: not while it lasts, nor when it clears
            return
        title, text = problem_notice(device.name, device.station, which, problem)
        notify(uow, device.restaurant_id, kind="printer_problem", title=title, body=text)


def parse_status(body: dict[str, Any]) -> PrinterStatus:
    """The status in a `printer_status` report; Rejected `bad_type` for a field of the wrong type or value."""
    online, paper = body.get("online"), body.get("paper")
    cover_open, error = body.get("cover_open", False), body.get("error", False)
    if type(online) is not bool or paper not in PAPER_STATES or type(cover_open) is not bool or type(error) is not bool:
        raise Rejected(
            "bad_type", "printer_status needs online (bool), paper (ok|near_end|out), cover_open, error (bool)"
        )
    return PrinterStatus(online, paper, cover_open, error)


def expire_tickets(deadline_seconds: float, now: Callable[[], datetime] = utcnow) -> Sweep:
    """The sweep that marks tickets no printer confirmed in time; `now` is the clock (tests move it)."""

    def sweep(uow: UnitOfWork) -> None:
        tickets.expire_unacknowledged(uow, deadline_seconds, now())

    sweep.__name__ = "expire_tickets"
    return sweep
