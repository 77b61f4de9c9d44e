"""The print worker on python-escpos Dummy printers whose state the test sets: order, dedupe, failover, REPRINT.

No MQTT here (tests/integration/test_printer*.py runs the whole agent on a real broker).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from devices.journal import Journal
from devices.print_worker import PrintWorker
from devices.printer_io import DummyPrinter, PrinterDown, PrinterStatus
from devices.ticket import Ticket, parse_ticket
from tests.printer_emulator import ticket_text
from tests.support import wait_for

PAPER_OUT = PrinterStatus(online=False, paper="out")


def ticket(ticket_id: int, kind: str = "new") -> Ticket:
    return parse_ticket(
        {
            "id": ticket_id,
            "kind": kind,
            "order_id": 300 + ticket_id,
            "version": 1,
            "station": "grill",
            "created_at": "2026-11-28T19:42:00.123Z",
            "items": [{"name": "Burger", "quantity": 1}],
        }
    )


class Rig:
    def __init__(self, state: Path, backup: bool = False, failover_seconds: float = 0.5) -> None:
        self.primary = DummyPrinter("primary-dummy")
        self.backup = DummyPrinter("backup-dummy")  # the worker gets it only with backup=True
        self.journal = Journal(state / "journal.sqlite3")
        self.reports: list[dict] = []
        self._lock = threading.Lock()
        self.worker = PrintWorker(
            primary=self.primary,
            backup=self.backup if backup else None,
            journal=self.journal,
            report=self._report,
            failover_seconds=failover_seconds,
            poll_seconds=0.1,
            retry_seconds=0.05,
            tz=UTC,
        )

    def _report(self, body: dict) -> None:
        with self._lock:
            self.reports.append(body)

    def give(self, *tickets: Ticket) -> None:
        for t in tickets:
            if self.journal.receive(t):
                self.worker.accept(t)

    def of_type(self, kind: str) -> list[dict]:
        with self._lock:
            return [r for r in self.reports if r["type"] == kind]

    def printed(self) -> list[tuple[int, str]]:
        return [(r["ticket_id"], r["printer"]) for r in self.of_type("printed")]


@pytest.fixture
def rigs(tmp_path) -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.worker.stop()
        rig.journal.close()


def rig(rigs: list[Rig], state: Path, **options) -> Rig:
    made = Rig(state, **options)
    rigs.append(made)
    return made


def test_tickets_print_in_arrival_order_and_a_redelivery_prints_nothing(rigs, tmp_path):
    r = rig(rigs, tmp_path)
    r.worker.start()
    r.give(ticket(3), ticket(1), ticket(2))
    wait_for(lambda: len(r.printed()) == 3)
    r.give(ticket(1))
    wait_for(lambda: r.worker.backlog == 0)
    assert r.printed() == [(3, "primary"), (1, "primary"), (2, "primary")]
    assert [ticket_text(job).splitlines()[1] for job in r.primary.jobs] == ["ORDER #303", "ORDER #301", "ORDER #302"]


def test_with_no_backup_a_failure_is_reported_once_per_ticket_and_nothing_is_dropped(rigs, tmp_path):
    r = rig(rigs, tmp_path)
    r.primary.state = PAPER_OUT
    r.worker.start()
    r.give(ticket(1), ticket(2))
    wait_for(lambda: len(r.of_type("failed")) == 2)
    r.give(ticket(3))
    wait_for(lambda: len(r.of_type("failed")) == 3)
    assert [(f["ticket_id"], f["reason"]) for f in r.of_type("failed")] == [
        (1, "paper_out"),
        (2, "paper_out"),
        (3, "paper_out"),
    ]
    assert r.of_type("printer_status")[-1] == {**r.of_type("printer_status")[-1], "online": False, "paper": "out"}
    assert r.primary.jobs == []

    r.primary.state = PrinterStatus(online=True)
    wait_for(lambda: len(r.printed()) == 3)
    assert r.printed() == [(1, "primary"), (2, "primary"), (3, "primary")]
    assert len(r.of_type("failed")) == 3  # once each, however many retries
    assert r.of_type("printer_status")[-1]["paper"] == "ok"


def test_the_backup_prints_after_the_failover_time_and_the_primary_takes_over_again(rigs, tmp_path):
    r = rig(rigs, tmp_path, backup=True, failover_seconds=0.4)
    r.primary.reachable = False
    r.worker.start()
    r.give(ticket(1))
    wait_for(lambda: r.printed() == [(1, "backup")])
    assert r.of_type("failed") == []  # the backup took it: nothing failed
    assert ticket_text(r.backup.jobs[0]).splitlines()[0] == " BACKUP FROM GRILL "
    r.primary.reachable = True
    wait_for(lambda: [s["online"] for s in r.of_type("printer_status") if s["printer"] == "primary"][-1:] == [True])
    r.give(ticket(2))
    wait_for(lambda: len(r.printed()) == 2)
    assert r.printed()[1] == (2, "primary")
    assert "BACKUP" not in ticket_text(r.primary.jobs[0])


def test_both_printers_failing_reports_failed_and_waits(rigs, tmp_path):
    r = rig(rigs, tmp_path, backup=True, failover_seconds=0.2)
    r.primary.state = PAPER_OUT
    r.backup.state = PrinterStatus(online=True, cover_open=True)
    r.worker.start()
    r.give(ticket(1))
    wait_for(lambda: r.of_type("failed"))
    [failed] = r.of_type("failed")
    assert failed["reason"] == "paper_out" and "backup: cover open" in failed["detail"]
    r.backup.state = PrinterStatus(online=True)
    wait_for(lambda: r.printed() == [(1, "backup")])


def test_each_printers_status_is_reported_when_it_changes_with_which_printer_it_is(rigs, tmp_path):
    r = rig(rigs, tmp_path, backup=True)
    r.backup.state = PrinterStatus(online=True, paper="near_end")
    r.worker.start()

    def statuses(which: str) -> list[tuple[bool, str]]:
        return [(s["online"], s["paper"]) for s in r.of_type("printer_status") if s["printer"] == which]

    wait_for(lambda: statuses("primary") == [(True, "ok")] and statuses("backup") == [(True, "near_end")])
    r.backup.reachable = False  # the backup's cable comes out while the primary prints on
    wait_for(lambda: statuses("backup")[-1:] == [(False, "near_end")])
    r.backup.reachable = True
    r.backup.state = PrinterStatus(online=True)
    wait_for(lambda: statuses("backup")[-1:] == [(True, "ok")])
    r.worker.stop()  # polled every 0.1 s throughout: still one report per change
    assert statuses("primary") == [(True, "ok")]
    assert statuses("backup") == [(True, "near_end"), (False, "near_end"), (True, "ok")]


class FlakyPrinter(DummyPrinter):
    """Says it is fine, then loses the connection half-way through the first job."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self.fail_next_send = True

    def send(self, data: bytes) -> None:
        if self.fail_next_send:
            self.fail_next_send = False
            self._raw(data[: len(data) // 2])
            raise PrinterDown("offline", "connection reset")
        super().send(data)


def test_a_job_that_broke_half_way_prints_again_as_reprint(rigs, tmp_path):
    r = rig(rigs, tmp_path)
    r.primary = r.worker.primary = FlakyPrinter()
    r.worker.start()
    r.give(ticket(1))
    wait_for(lambda: r.printed() == [(1, "primary")])
    assert ticket_text(r.primary.jobs[0]).splitlines()[0] == " REPRINT "


def test_a_ticket_found_printing_after_a_restart_prints_as_reprint_and_printed_ones_not_at_all(rigs, tmp_path):
    before = Journal(tmp_path / "journal.sqlite3")
    for t in (ticket(1), ticket(2), ticket(3)):
        before.receive(t)
    before.printing(1, "primary")
    before.printed(1, "primary")
    before.mark_reported(1)
    before.printing(2, "primary")  # the crash
    before.close()

    r = rig(rigs, tmp_path)
    r.worker.start()
    wait_for(lambda: len(r.printed()) == 2)
    assert r.printed() == [(2, "primary"), (3, "primary")]
    assert [ticket_text(job).splitlines()[0] for job in r.primary.jobs] == [" REPRINT ", "GRILL"]


class Sent:
    """Stands for paho's MQTTMessageInfo: published once the broker acknowledged it."""

    def __init__(self) -> None:
        self.acknowledged = False

    def is_published(self) -> bool:
        return self.acknowledged


def test_a_printed_report_the_broker_never_acknowledged_is_sent_again_at_the_next_start(rigs, tmp_path):
    r = rig(rigs, tmp_path)
    sent: list[Sent] = []

    def report(body: dict) -> Sent:
        r._report(body)
        sent.append(Sent())
        return sent[-1]

    r.worker._report = report
    r.worker.start()
    r.give(ticket(1), ticket(2))
    wait_for(lambda: len(r.printed()) == 2)
    printed_reports = [s for s, body in zip(sent, r.reports, strict=True) if body["type"] == "printed"]
    printed_reports[0].acknowledged = True  # ticket 2's PUBACK never came: the process ends
    wait_for(lambda: r.journal.unreported() == [(2, "primary")])
    r.worker.stop()

    again = rig(rigs, tmp_path)
    again.worker.start()
    wait_for(lambda: again.printed() == [(2, "primary")])
    assert again.primary.jobs == []  # reported again, not printed again
    wait_for(lambda: again.journal.unreported() == [])


def test_reports_are_paced_below_the_brokers_per_device_limit():
    """The broker drops a device's publishes beyond its limit silently: the printer must stay under it."""
    from broker.limits import Limits
    from devices.printer import REPORT_BURST, REPORTS_PER_SECOND

    limits = Limits()
    assert limits.device_publishes_per_second > REPORTS_PER_SECOND
    assert limits.device_publish_burst > REPORT_BURST
