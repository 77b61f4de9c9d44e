"""The printed-ticket journal: what survives a restart, and what it answers after one."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from devices.journal import Journal
from devices.ticket import Ticket, parse_ticket


def ticket(ticket_id: int, order_id: int = 311) -> Ticket:
    return parse_ticket(
        {
            "id": ticket_id,
            "kind": "new",
            "order_id": order_id,
            "version": 1,
            "station": "grill",
            "created_at": "2026-11-28T19:42:00.123Z",
            "items": [{"name": "Burger", "quantity": 1}],
        }
    )


def state_of(journal: Journal, ticket_id: int) -> str | None:
    entry = journal.entry(ticket_id)
    return entry.state if entry is not None else None


def test_a_ticket_is_received_once_and_its_progress_survives_a_restart(tmp_path):
    path = tmp_path / "state" / "journal.sqlite3"
    journal = Journal(path)
    assert journal.receive(ticket(1)) is True
    assert journal.receive(ticket(1)) is False  # redelivered: nothing to do
    assert journal.receive(ticket(2)) is True
    assert journal.receive(ticket(3)) is True
    journal.printing(1, "primary")
    journal.printed(1, "primary")
    journal.printing(2, "primary")  # the process dies here: maybe on paper, maybe not
    journal.close()

    again = Journal(path)
    assert state_of(again, 1) == "printed"
    second = again.entry(2)
    assert second is not None and (second.state, second.printer) == ("printing", "primary")
    assert state_of(again, 3) == "received"
    assert again.entry(4) is None
    assert [t.id for t in again.pending()] == [2, 3]
    assert again.pending()[0] == ticket(2)  # the body is kept, to print it without the broker
    assert again.receive(ticket(1)) is False
    again.close()


def test_pending_tickets_come_back_in_arrival_order_not_id_order(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    for ticket_id in (30, 4, 17):
        journal.receive(ticket(ticket_id))
    assert [t.id for t in journal.pending()] == [30, 4, 17]


def test_failed_is_marked_reported_once(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    journal.receive(ticket(5))
    assert journal.mark_failed_reported(5) is True
    assert journal.mark_failed_reported(5) is False
    journal.close()
    assert Journal(tmp_path / "j.sqlite3").mark_failed_reported(5) is False  # across restarts too


def test_a_reused_id_with_another_ticket_behind_it_is_a_new_ticket(tmp_path):
    """The bus's data was reset and ids start again: the new ticket 1 must print."""
    journal = Journal(tmp_path / "j.sqlite3")
    journal.receive(ticket(1, order_id=311))
    journal.printed(1, "primary")
    assert journal.receive(ticket(1, order_id=9)) is True
    assert state_of(journal, 1) == "received"
    assert [t.order_id for t in journal.pending()] == [9]


def test_every_change_is_durable_sqlite_with_full_sync(tmp_path):
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.receive(ticket(1))
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # another connection (another process) sees it at once: committed, not buffered
    assert sqlite3.connect(path).execute("SELECT state FROM ticket WHERE id = 1").fetchone() == ("received",)


def test_old_printed_tickets_are_pruned_pending_ones_never(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    journal.receive(ticket(1))
    journal.printed(1, "primary")
    journal.receive(ticket(2))
    assert journal.prune(older_than=timedelta(seconds=-1)) == 1
    assert journal.entry(1) is None and journal.entry(2) is not None


def test_printed_tickets_whose_report_did_not_reach_the_bus_are_listed_until_marked(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    for ticket_id in (1, 2, 3):
        journal.receive(ticket(ticket_id))
    journal.printed(1, "primary")
    journal.printed(2, "backup")
    journal.mark_reported(1)
    assert journal.unreported() == [(2, "backup")]  # 3 is not printed: nothing to report yet


def test_the_catch_up_cursor_survives_a_restart(tmp_path):
    path = tmp_path / "p.sqlite3"
    journal = Journal(path)
    assert journal.cursor() is None  # a new journal: catch-up starts from the bus's snapshot
    journal.set_cursor(41)
    journal.set_cursor(42)
    journal.close()
    again = Journal(path)
    assert again.cursor() == 42
    again.close()
