"""Printer reports → ticket outcomes and printer-problem notifications (docs/devices.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.ingest import DeviceMessage, Rejected
from bridge.sweeper import Sweep, UowFactory
from core.models import Device, utcnow
from core.services import tickets
from core.services.inventory import notify
from core.unit_of_work import UnitOfWork

FAILURE_REASONS = frozenset({"offline", "paper_out", "cover_open", "error"})
PAPER_STATES = frozenset({"ok", "near_end", "out"})


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
        if ticket.station != device.station:
            raise Rejected("wrong_station", f"ticket {ticket_id} is for {ticket.station}, not {device.station}")
        if kind == "printed":
            if body.get("printer", "primary") not in ("primary", "backup"):
                raise Rejected("bad_type", "printer must be primary or backup")
            tickets.record_printed(uow, ticket, device.id)
        else:
            reason, detail = body.get("reason"), body.get("detail", "")
            if reason not in FAILURE_REASONS or not isinstance(detail, str):
                raise Rejected("bad_type", f"reason must be one of {sorted(FAILURE_REASONS)}, detail a string")
            tickets.record_failed(uow, ticket, device.id, reason, detail)
        return None

    def _status(self, uow: UnitOfWork, device: Device, body: dict[str, Any]) -> None:
        problem = status_problem(body)
        which = body.get("printer", "primary")
        if which not in ("primary", "backup"):
            raise Rejected("bad_type", "printer must be primary or backup")
        with self._lock:
            previous = self._problems.get((device.id, which))
            self._problems[(device.id, which)] = problem
        if problem is None or problem == previous:
            return
        if which == "primary":
            title = f"{device.name}: {problem}"
            body_text = f"the {device.station} printer reports {problem}; tickets go to its backup if it has one"
        else:
            title = f"{device.name} backup: {problem}"
            body_text = f"the {device.station} backup printer reports {problem}; it cannot take over until fixed"
        notify(uow, device.restaurant_id, kind="printer_problem", title=title, body=body_text)


def status_problem(body: dict[str, Any]) -> str | None:
    """What stops this printer printing, in words for the kitchen; None when it can print."""
    online, paper = body.get("online"), body.get("paper")
    flags = [body.get("cover_open", False), body.get("error", False)]
    if type(online) is not bool or paper not in PAPER_STATES or any(type(flag) is not bool for flag in flags):
        raise Rejected(
            "bad_type", "printer_status needs online (bool), paper (ok|near_end|out), cover_open, error (bool)"
        )
    cover_open, error = flags
    if cover_open:  # most specific first: a printer out of paper also says it is offline
        return "cover open"
    if paper == "out":
        return "paper out"
    if error:
        return "printer error"
    return None if online else "offline"


def expire_tickets(deadline_seconds: float, now: Callable[[], datetime] = utcnow) -> Sweep:
    """The sweep that marks tickets no printer confirmed in time; `now` is the clock (tests move it)."""

    def sweep(uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            tickets.expire_unacknowledged(uow, deadline_seconds, now())

    sweep.__name__ = "expire_tickets"
    return sweep
