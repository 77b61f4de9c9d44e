"""The wake channel on PostgreSQL: a commit that wrote events carries `NOTIFY orderbus_outbox`, a relay
process `LISTEN`s, and a lost LISTEN connection comes back by itself. Against a real server
(ORDERBUS_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432/postgres), in a database made
for the test and dropped after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from bridge.wake import PostgresListener, wake_listener
from core.db import create_schema, make_engine
from core.events import Event
from core.models import Restaurant
from core.unit_of_work import UnitOfWork
from tests.postgres import fresh_database
from tests.support import Wakes, wait_for


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with fresh_database("wake") as url:
        engine = make_engine(url)
        try:
            create_schema(engine)
            yield engine
        finally:
            engine.dispose()


def restaurant(engine: Engine) -> int:
    with UnitOfWork(engine) as uow:
        row = Restaurant(name="Wake")
        uow.session.add(row)
        uow.commit()
        assert row.id is not None
        return row.id


def commit_event(engine: Engine, rid: int, *, commit: bool = True) -> None:
    with UnitOfWork(engine) as uow:
        uow.emit(rid, Event("stock_changed", {"n": 1}))
        if commit:
            uow.commit()


def test_a_commit_with_events_wakes_a_listener_and_nothing_else_does(pg_engine: Engine):
    rid = restaurant(pg_engine)
    wakes = Wakes()
    listener = wake_listener(pg_engine, Path("unused"), wakes)
    assert isinstance(listener, PostgresListener)
    listener.start()
    try:
        assert wakes.wait(10)  # the wake after connecting: anything committed before it listened
        other = make_engine(pg_engine.url.render_as_string(hide_password=False))  # "another process"
        try:
            for _ in range(3):
                started = time.monotonic()
                commit_event(other, rid)
                assert wakes.wait(1.0)
                assert time.monotonic() - started < 0.5
            count = wakes.count
            restaurant(other)  # a commit without events
            commit_event(other, rid, commit=False)  # rolled back
            time.sleep(0.5)
            assert wakes.count == count
        finally:
            other.dispose()
    finally:
        listener.stop()


def test_a_killed_listen_connection_reconnects_and_wakes_again(pg_engine: Engine):
    rid = restaurant(pg_engine)
    wakes = Wakes()
    listener = PostgresListener(pg_engine, wakes)
    listener.start()
    try:
        wait_for(lambda: listener.connections == 1, timeout=10)
        with pg_engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
                )
            ).all()
        assert killed == [(True,)]
        wait_for(lambda: listener.connections == 2, timeout=10)
        wakes.wait(0)
        commit_event(pg_engine, rid)
        assert wakes.wait(1.0)
    finally:
        listener.stop()
