"""Printer reports → ticket outcomes and printer-problem notifications (docs/devices.md)."""

from __future__ import annotations

import threading
from typing import Any

from api.models import Device
from api.services import tickets
from api.services.inventory import notify
from api.unit_of_work import UnitOfWork
from bridge.ingest import DeviceMessage, Rejected
from bridge.sweeper import Sweep, UowFactory

FAILURE_REASONS = frozenset({"offline", "paper_out", "cover_open", "error"})
PAPER_STATES = frozenset({"ok", "near_end", "out"})


class PrinterEvents:
    """Handles ("events", "printer"); remembers each printer's last status so a problem notifies once."""

    def __init__(self) -> None:
        self._problems: dict[str, str | None] = {}
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
        online, paper, cover_open = body.get("online"), body.get("paper"), body.get("cover_open", False)
        if type(online) is not bool or paper not in PAPER_STATES or type(cover_open) is not bool:
            raise Rejected("bad_type", "printer_status needs online (bool), paper (ok|near_end|out), cover_open (bool)")
        problem = "offline" if not online else "paper out" if paper == "out" else "cover open" if cover_open else None
        with self._lock:
            previous = self._problems.get(device.id)
            self._problems[device.id] = problem
        if problem is not None and problem != previous:
            notify(
                uow,
                device.restaurant_id,
                kind="printer_problem",
                title=f"{device.name}: {problem}",
                body=f"the {device.station} printer reports {problem}; tickets go to its backup if it has one",
            )


def expire_tickets(deadline_seconds: float) -> Sweep:
    """The sweep that marks tickets no printer confirmed in time."""

    def sweep(uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            tickets.expire_unacknowledged(uow, deadline_seconds)

    sweep.__name__ = "expire_tickets"
    return sweep
