"""The sweeper: each sweep is one transaction it commits once; a failing sweep is counted and logged,
changes nothing, and the others still run and commit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event
from sqlmodel import col, select

from bridge.metrics import SWEEP_FAILURES
from bridge.sweeper import Sweeper
from core.db import create_schema, make_engine
from core.models import Notification, OutboxEvent, Restaurant
from core.services.notifications import notify
from core.unit_of_work import UnitOfWork


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'sweeper.db'}")
    create_schema(engine)
    with UnitOfWork(engine) as uow:
        uow.session.add(Restaurant(id=1, name="A"))
        uow.commit()
    return engine


def titles(engine: Engine) -> list[str]:
    with UnitOfWork(engine) as uow:
        return list(uow.session.exec(select(Notification.title).order_by(col(Notification.id))))


def test_a_failing_sweep_is_counted_changes_nothing_and_the_others_still_run(engine: Engine):
    def broken(uow: UnitOfWork) -> None:
        notify(uow, 1, kind="test", title="half done")
        raise RuntimeError("database went away")

    def healthy(uow: UnitOfWork) -> None:
        notify(uow, 1, kind="test", title="healthy")

    before = SWEEP_FAILURES.labels(sweep="broken")._value.get()
    sweeper = Sweeper(lambda: UnitOfWork(engine), [broken, healthy])
    sweeper.run_once()
    sweeper.run_once()
    assert titles(engine) == ["healthy", "healthy"]
    assert SWEEP_FAILURES.labels(sweep="broken")._value.get() == before + 2


def test_each_sweep_commits_once_and_wakes_the_relay_when_it_wrote_events(engine: Engine):
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    woken: list[int] = []

    def three_notes(uow: UnitOfWork) -> None:
        for n in range(3):
            notify(uow, 1, kind="test", title=f"note {n}")

    def quiet(uow: UnitOfWork) -> None:
        uow.session.get(Restaurant, 1)

    Sweeper(lambda: UnitOfWork(engine, lambda: woken.append(1)), [three_notes, quiet]).run_once()
    assert len(commits) == 2  # one per sweep, however much each wrote
    assert woken == [1]  # only the sweep that wrote events wakes the relay
    with UnitOfWork(engine) as uow:
        assert len(uow.session.exec(select(OutboxEvent)).all()) == 3
