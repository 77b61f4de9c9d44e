"""The sweeper: one failing rule is counted and logged, and the others still run."""

from __future__ import annotations

from bridge.sweeper import SWEEP_FAILURES, Sweeper, UowFactory
from core.unit_of_work import UnitOfWork


def no_database() -> UnitOfWork:
    raise AssertionError("these sweeps open no unit of work")


def test_a_failing_sweep_is_counted_and_the_others_still_run():
    ran: list[str] = []

    def broken(_uow_factory: UowFactory) -> None:
        raise RuntimeError("database went away")

    def healthy(_uow_factory: UowFactory) -> None:
        ran.append("healthy")

    before = SWEEP_FAILURES.labels(sweep="broken")._value.get()
    sweeper = Sweeper(no_database, [broken, healthy])
    sweeper.run_once()
    sweeper.run_once()
    assert ran == ["healthy", "healthy"]
    assert SWEEP_FAILURES.labels(sweep="broken")._value.get() == before + 2
