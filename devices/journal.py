"""The printer's journal: every ticket it accepted and how far printing it got, on disk.

It is what makes "never print twice unmarked" hold across crashes and restarts:

- `received`: the ticket is stored (with its body) before the MQTT message is acknowledged, so
  once the broker forgets it the journal still has it, and tickets print in the order they came;
- `printing`: recorded before the first byte goes to a printer; found without `printed` after a
  restart (or a failed attempt), the ticket may be on paper already, so it prints again as REPRINT;
- `cursor`: the seq up to which every ticket of the station is here, moved by catch-up
  (devices.catchup) once the tickets before it are stored, so a restart goes on from it;
- `printed`: recorded once the printer took (and, if it can, confirmed) the ticket; a ticket
  delivered again after that is acknowledged and not printed. `reported` once the broker has
  the `printed` event; one that was not is sent again at the next start.

SQLite with `synchronous=FULL`: each change is one committed, fsync'd transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.ticket import BadTicket, Ticket, parse_ticket

log = logging.getLogger("orderbus.devices.printer")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ticket (
    id INTEGER PRIMARY KEY,          -- the bus's ticket id: what printers dedupe by
    arrival INTEGER NOT NULL,        -- order of arrival, the order tickets print in
    fingerprint TEXT NOT NULL,       -- tells a redelivery from another ticket reusing the id
    body TEXT NOT NULL,              -- the ticket, to print it after a restart
    state TEXT NOT NULL,             -- received | printing | printed
    printer TEXT,                    -- primary | backup: the last one that got it
    failed_reported INTEGER NOT NULL DEFAULT 0,
    reported INTEGER NOT NULL DEFAULT 0,  -- the bus acknowledged our `printed` (PUBACK)
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ticket_pending ON ticket (state, arrival);
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL             -- every ticket up to this seq of the restaurant is in the journal
);
"""


@dataclass(frozen=True)
class Entry:
    state: str  # received | printing | printed
    printer: str | None
    failed_reported: bool


class Journal:
    """Thread-safe: the MQTT thread records arrivals while the print worker records progress."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def receive(self, ticket: Ticket) -> bool:
        """Store an arriving ticket; False if it is already here (a redelivery: nothing to do)."""
        with self._lock:
            row = self._db.execute("SELECT fingerprint FROM ticket WHERE id = ?", (ticket.id,)).fetchone()
            if row is not None and row[0] == ticket.fingerprint:
                return False
            if row is not None:
                log.warning("ticket %s reuses the id of a different ticket (was the bus's data reset?)", ticket.id)
            arrival = self._db.execute("SELECT coalesce(max(arrival), 0) + 1 FROM ticket").fetchone()[0]
            self._db.execute(
                "INSERT OR REPLACE INTO ticket (id, arrival, fingerprint, body, state, updated_at)"
                " VALUES (?, ?, ?, ?, 'received', ?)",
                (ticket.id, arrival, ticket.fingerprint, ticket.to_json(), _now()),
            )
            return True

    def entry(self, ticket_id: int) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, printer, failed_reported FROM ticket WHERE id = ?", (ticket_id,)
            ).fetchone()
        return None if row is None else Entry(row[0], row[1], bool(row[2]))

    def printing(self, ticket_id: int, printer: str) -> None:
        self._set(ticket_id, "printing", printer)

    def printed(self, ticket_id: int, printer: str) -> None:
        self._set(ticket_id, "printed", printer)

    def mark_reported(self, ticket_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE ticket SET reported = 1 WHERE id = ?", (ticket_id,))

    def unreported(self) -> list[tuple[int, str]]:
        """(ticket id, printer) of printed tickets whose `printed` event may not have reached the bus."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, printer FROM ticket WHERE state = 'printed' AND reported = 0 ORDER BY arrival"
            ).fetchall()
        return [(row[0], row[1] or "primary") for row in rows]

    def mark_failed_reported(self, ticket_id: int) -> bool:
        """True the first time for a ticket: `failed` is reported once, not on every retry or restart."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE ticket SET failed_reported = 1, updated_at = ? WHERE id = ? AND failed_reported = 0",
                (_now(), ticket_id),
            )
        return cursor.rowcount == 1

    def cursor(self) -> int | None:
        """The seq catch-up goes on from (devices.catchup); None before the first catch-up."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursor WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, seq: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cursor (id, seq) VALUES (1, ?)", (seq,))

    def pending(self) -> list[Ticket]:
        """Tickets not printed yet, in arrival order (what a restarted agent prints first)."""
        with self._lock:
            rows = self._db.execute("SELECT id, body FROM ticket WHERE state != 'printed' ORDER BY arrival").fetchall()
        tickets = []
        for ticket_id, body in rows:
            try:
                tickets.append(parse_ticket(json.loads(body)))
            except (BadTicket, ValueError) as exc:
                log.error("journal entry for ticket %s is unreadable, skipped: %s", ticket_id, exc)
        return tickets

    def prune(self, older_than: timedelta = timedelta(days=14)) -> int:
        """Forget printed tickets after a while; the bus never redelivers that late."""
        cutoff = (datetime.now(UTC) - older_than).isoformat()
        with self._lock:
            cursor = self._db.execute("DELETE FROM ticket WHERE state = 'printed' AND updated_at < ?", (cutoff,))
        return cursor.rowcount

    def _set(self, ticket_id: int, state: str, printer: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE ticket SET state = ?, printer = ?, updated_at = ? WHERE id = ?",
                (state, printer, _now(), ticket_id),
            )


def _now() -> str:
    return datetime.now(UTC).isoformat()
