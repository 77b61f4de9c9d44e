"""core.rules.printers: what stops a printer printing, the kitchen's notice of it, and tickets of other stations."""

from __future__ import annotations

import pytest

from core.domain import Invalid
from core.rules.printers import PrinterStatus, check_station, problem_notice, problem_of


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (PrinterStatus(online=True, paper="ok"), None),
        (PrinterStatus(online=True, paper="near_end"), None),  # still prints: worth a look, not a problem
        (PrinterStatus(online=False, paper="ok"), "offline"),
        (PrinterStatus(online=True, paper="ok", error=True), "printer error"),
        (PrinterStatus(online=False, paper="out"), "paper out"),  # out of paper also reads as offline
        (PrinterStatus(online=False, paper="out", cover_open=True, error=True), "cover open"),
    ],
)
def test_the_most_specific_problem_is_named(status, problem):
    assert problem_of(status) == problem


def test_the_notice_says_whether_the_backup_takes_over():
    title, body = problem_notice("grill printer", "grill", "primary", "paper out")
    assert title == "grill printer: paper out" and "go to its backup" in body
    title, body = problem_notice("grill printer", "grill", "backup", "offline")
    assert title == "grill printer backup: offline" and "cannot take over" in body


def test_a_printer_reports_only_on_tickets_of_its_station():
    check_station(7, "grill", "grill")
    with pytest.raises(Invalid) as caught:
        check_station(7, "grill", "bar")
    assert caught.value.reason == "wrong_station"
