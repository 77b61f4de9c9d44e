"""Engine creation: SQLite for the embedded default, PostgreSQL by URL, the same code paths."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import SQLModel, create_engine

from core import models  # noqa: F401  (registers the tables)

log = logging.getLogger("orderbus.db")
WRITER_WAIT_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let BEGIN below decide the locking
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # One transaction at a time per process, queued on a lock rather than on SQLite's busy
    # handler, which sleeps up to 100 ms between retries: with the API, relay, ingest and
    # sweeper all writing, those sleeps added seconds to a ticket's way out under load.
    # Other processes (`orderbus api` beside `orderbus bridge`) still meet at busy_timeout.
    # A plain lock, not an RLock: FastAPI may end a request's transaction (rollback after an
    # error) on another thread than the one that began it. The timeout keeps an unforeseen
    # nested transaction on one thread from hanging: it falls back to SQLite's own waiting.
    writer = threading.Lock()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        if writer.acquire(timeout=WRITER_WAIT_SECONDS):
            connection.info["holds_writer"] = True
        else:
            log.warning(
                "no turn at the database writer lock after %s s; waiting on SQLite instead", WRITER_WAIT_SECONDS
            )
        try:
            # Take the write lock up front: a read that later upgrades to a write can fail
            # with "database is locked" instead of waiting its turn.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(connection)
            raise

    def _release(connection: Any, *_args: Any) -> None:
        if connection.info.pop("holds_writer", False):
            writer.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)
    return engine


def create_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
