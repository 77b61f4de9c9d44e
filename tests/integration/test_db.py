"""The SQLite engine's writer lock: one transaction at a time per process, whichever thread ends it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlmodel import Session


def test_a_transaction_ended_on_another_thread_frees_the_writer(engine: Engine):
    """FastAPI can roll a request's session back on another thread than the one that began it."""
    session = Session(engine)
    began, done = threading.Event(), threading.Event()

    def begin_and_stay() -> None:  # a live thread: a finished one's id could be reused by the next
        session.execute(text("SELECT 1"))
        began.set()
        done.wait(10)

    first = threading.Thread(target=begin_and_stay)
    first.start()
    assert began.wait(5)
    on_own_thread(session.rollback)  # ends on another thread
    counted: list[int] = []

    def write() -> None:
        with Session(engine) as other:
            counted.append(other.execute(text("SELECT count(*) FROM restaurant")).scalar_one())
            other.commit()

    try:
        on_own_thread(write, timeout=5)  # a third thread gets its turn at once
    finally:
        done.set()
        first.join(5)
    assert counted == [0]
    session.close()
    engine.dispose()


def on_own_thread(work: Callable[[], object], timeout: float = 5) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "still waiting for the database"
    if errors:
        raise errors[0]


def test_writers_on_many_threads_take_turns_without_errors(engine: Engine):
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            with Session(engine) as session:
                insert = "INSERT INTO restaurant (name, event_seq, order_seq, currency) VALUES (:n, 0, 0, 'EUR')"
                session.execute(text(insert), {"n": f"r{n}"})
                session.commit()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with Session(engine) as session:
        assert session.execute(text("SELECT count(*) FROM restaurant")).scalar_one() == 40
    engine.dispose()
