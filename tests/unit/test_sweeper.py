"""The sweeper: one failing rule is counted and logged, and the others still run."""

from __future__ import annotations

from bridge.metrics import SWEEP_FAILURES
from bridge.sweeper import Sweeper


def test_a_failing_sweep_is_counted_and_the_others_still_run():
    ran: list[str] = []

    def broken(_uow_factory) -> None:
        raise RuntimeError("database went away")

    def healthy(_uow_factory) -> None:
        ran.append("healthy")

    before = SWEEP_FAILURES.labels(sweep="broken")._value.get()
    sweeper = Sweeper(lambda: None, [broken, healthy])  # type: ignore[arg-type, return-value]
    sweeper.run_once()
    sweeper.run_once()
    assert ran == ["healthy", "healthy"]
    assert SWEEP_FAILURES.labels(sweep="broken")._value.get() == before + 2
