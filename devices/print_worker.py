"""The print worker: tickets from the journal to paper, one at a time, in arrival order.

The head ticket goes to the primary printer; after `failover_seconds` of the primary failing, to
the backup (marked BACKUP FROM <station>); with no backup, or both failing, `failed` is reported
once per ticket and the ticket waits, retried every `retry_seconds`, until a printer takes it.
Between tickets it polls both printers' status every `poll_seconds` and reports `printer_status`
(with `printer`: primary or backup) when one changes, so the kitchen learns that the backup is
out of paper before it is needed. A `printed` event the broker did not acknowledge is sent again at the next start.
Knows nothing of MQTT: `report` publishes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from devices.journal import Journal
from devices.link import utc_iso
from devices.printer_io import Printer, PrinterDown, PrinterStatus
from devices.ticket import Ticket
from devices.tickets_escpos import render

log = logging.getLogger("orderbus.devices.printer")

Report = Callable[[dict[str, Any]], Any]  # may return paho's MQTTMessageInfo: then delivery is tracked
PRUNE_EVERY_SECONDS = 6 * 3600  # the journal forgets printed tickets after two weeks (Journal.prune)


class PrintWorker:
    """Everything after the journal: the queue, the printers, failover, reports. Knows nothing of MQTT."""

    def __init__(
        self,
        *,
        primary: Printer,
        backup: Printer | None,
        journal: Journal,
        report: Report,
        failover_seconds: float,
        poll_seconds: float = 3.0,
        retry_seconds: float = 1.0,
        tz: tzinfo | None = None,
    ) -> None:
        self.primary, self.backup, self.journal = primary, backup, journal
        self._report = report
        self.failover_seconds, self.poll_seconds, self.retry_seconds = failover_seconds, poll_seconds, retry_seconds
        self.tz = tz
        self._queue: collections.deque[Ticket] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="printer-worker", daemon=True)
        self._primary_down_since: float | None = None
        self._primary_error: PrinterDown | None = None
        self._next_primary_try = 0.0
        self._published: dict[str, PrinterStatus] = {}  # "primary" / "backup" → last reported
        # (ticket id, printer, MQTTMessageInfo) of `printed` in flight
        self._unconfirmed: list[tuple[int, str, Any]] = []

    def start(self) -> None:
        self.journal.prune()
        for ticket_id, printer in self.journal.unreported():  # printed just before the last run ended
            self._report_printed(ticket_id, printer)
        self._queue.extend(self.journal.pending())
        if self._queue:
            log.info("%d ticket(s) from the journal still to print", len(self._queue))
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        self._thread.join(timeout)

    def accept(self, ticket: Ticket) -> None:
        """A new ticket, already in the journal: print it after those before it."""
        with self._wake:
            self._queue.append(ticket)
            self._wake.notify_all()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    # --- the worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_poll, next_prune = 0.0, time.monotonic() + PRUNE_EVERY_SECONDS
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_prune:
                    self.journal.prune()
                    next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                self.settle_reports()
                if time.monotonic() >= next_poll:
                    self._poll()
                    next_poll = time.monotonic() + self.poll_seconds
                with self._wake:
                    if not self._queue:
                        self._wake.wait(max(0.0, next_poll - time.monotonic()))
                        continue
                    ticket = self._queue[0]
                if self._handle(ticket):
                    with self._wake:
                        self._queue.popleft()
                else:
                    self._stopping.wait(self.retry_seconds)
            except Exception:  # the worker must outlive any one bad moment; the ticket stays queued
                log.exception("printer worker error; retrying")
                self._stopping.wait(self.retry_seconds)

    def _handle(self, ticket: Ticket) -> bool:
        """Print the ticket (or find it printed already); False when it must wait and be retried."""
        entry = self.journal.entry(ticket.id)
        if entry is not None and entry.state == "printed":
            return True  # delivered twice, printed once
        now = time.monotonic()
        if now >= self._next_primary_try:
            try:
                self._print(self.primary, "primary", ticket)
            except PrinterDown as exc:
                self._primary_failed(exc, now)
            else:
                self._primary_ok()
                return True
        assert self._primary_error is not None
        down_for = now - (self._primary_down_since or now)
        if self.backup is not None and down_for >= self.failover_seconds:
            try:
                self._print(self.backup, "backup", ticket)
            except PrinterDown as exc:
                self._failed(f"primary: {self._primary_error.detail}; backup: {exc.detail}")
                return False
            return True
        if self.backup is None:
            self._failed(self._primary_error.detail)
        return False

    def _print(self, printer: Printer, which: str, ticket: Ticket) -> None:
        """Status first, then `printing`, the bytes, the confirmation, `printed`; PrinterDown on the way out."""
        maybe_printed = False
        try:
            status = self._status_of(printer, which)
            if status.problem is not None:
                raise PrinterDown(*status.problem)
            entry = self.journal.entry(ticket.id)
            maybe_printed = entry is not None and entry.state == "printing"
            backup_from = ticket.station if which == "backup" else None
            data = render(ticket, reprint=maybe_printed, backup_from=backup_from, tz=self.tz)
            self.journal.printing(ticket.id, which)
            printer.send(data)
            if not printer.confirm():  # it cannot say it printed; at least it must still be able to
                after = self._status_of(printer, which)
                if after.problem is not None:
                    raise PrinterDown(after.problem[0], f"{after.problem[1]} while printing")
        finally:
            printer.close()
        self.journal.printed(ticket.id, which)
        self._report_printed(ticket.id, which)
        log.info("ticket %s printed on the %s printer%s", ticket.id, which, " (REPRINT)" if maybe_printed else "")

    def _report_printed(self, ticket_id: int, which: str) -> None:
        sent = self._report({"type": "printed", "ticket_id": ticket_id, "printer": which, "ts": utc_iso()})
        if hasattr(sent, "is_published"):
            self._unconfirmed.append((ticket_id, which, sent))
        else:
            self.journal.mark_reported(ticket_id)

    def settle_reports(self) -> None:
        """Mark `printed` events the broker acknowledged; the rest are sent again after a restart.

        One published while the link was down (between brokers, a cluster node killed) never goes out:
        paho says so by raising from `is_published`. It is sent again now, not left to raise on every pass
        (which stopped the worker from printing anything more)."""
        waiting, unsent = [], []
        for ticket_id, which, sent in self._unconfirmed:
            try:
                published = sent.is_published()
            except (RuntimeError, ValueError):
                unsent.append((ticket_id, which))
                continue
            if published:
                self.journal.mark_reported(ticket_id)
            else:
                waiting.append((ticket_id, which, sent))
        self._unconfirmed = waiting
        for ticket_id, which in unsent:
            log.warning("ticket %s: its `printed` report was not sent (no connection); sending it again", ticket_id)
            self._report_printed(ticket_id, which)

    def _status_of(self, printer: Printer, which: str) -> PrinterStatus:
        try:
            status = printer.status()
        except PrinterDown:
            last = self._published.get(which)
            self._publish_status(which, PrinterStatus(online=False, paper=last.paper if last else "ok"))
            raise
        self._publish_status(which, status)
        return status

    def _poll(self) -> None:
        try:
            status = self._status_of(self.primary, "primary")
        except PrinterDown as exc:
            self._primary_failed(exc, time.monotonic())
        else:
            if status.problem is None:
                self._primary_ok()
            else:
                self._primary_failed(PrinterDown(*status.problem), time.monotonic())
        finally:
            self.primary.close()
        if self.backup is not None:
            try:
                self._status_of(self.backup, "backup")
            except PrinterDown:
                pass  # reported as offline by _status_of
            finally:
                self.backup.close()

    def _primary_failed(self, exc: PrinterDown, now: float) -> None:
        if self._primary_down_since is None:
            self._primary_down_since = now
            log.warning("primary printer %s: %s", self.primary.name, exc)
        self._primary_error = exc
        self._next_primary_try = now + self.retry_seconds

    def _primary_ok(self) -> None:
        if self._primary_down_since is not None:
            log.info("primary printer %s is back", self.primary.name)
        self._primary_down_since, self._primary_error, self._next_primary_try = None, None, 0.0

    def _publish_status(self, which: str, status: PrinterStatus) -> None:
        if status == self._published.get(which):
            return
        self._published[which] = status
        if which == "backup" and self.backup is not None and status.problem is not None:
            log.warning("backup printer %s: %s", self.backup.name, status.problem[1])  # the primary's: _primary_failed
        self._report({"type": "printer_status", "printer": which, **status.event(), "ts": utc_iso()})

    def _failed(self, detail: str) -> None:
        """Report `failed` once for each ticket waiting (the head and those queued behind it)."""
        assert self._primary_error is not None
        with self._wake:
            waiting = list(self._queue)
        for ticket in waiting:
            if self.journal.mark_failed_reported(ticket.id):
                body = {"type": "failed", "ticket_id": ticket.id, "reason": self._primary_error.reason}
                self._report({**body, "detail": detail[:300], "ts": utc_iso()})
                log.warning("ticket %s waits: %s", ticket.id, detail)
