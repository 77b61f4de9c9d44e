"""Engines and the schema: SQLite for the embedded default, PostgreSQL by URL, the same code paths.

The schema is what the Alembic revisions in `core/migrations/versions` build; `upgrade` applies
them, `check_current` lets a process refuse a database at another revision. Every failure here
is a `DatabaseError` whose message is one line fit to show as it is."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, event, inspect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlmodel import SQLModel, create_engine

from core import models  # noqa: F401  (registers the tables)

log = logging.getLogger("orderbus.db")
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)  # `upgrade` logs what changed, once
WRITER_WAIT_SECONDS = 30.0
MIGRATIONS = Path(__file__).with_name("migrations")
FIRST_REVISION = "0001"  # the schema of orderbus before migrations: such a database is stamped with it
VERSION_TABLE = "alembic_version"
_PG_MIGRATION_LOCK = 0x6F72646572627573  # "orderbus": one migrating process at a time per database


class DatabaseError(RuntimeError):
    """The database cannot be used as it is; the message says why in one line."""


class DatabaseUnreachable(DatabaseError):
    """The URL is not usable or the database does not answer: the fix is another URL or data dir."""


class SchemaOutOfDate(DatabaseError):
    """The database is at another revision than this code's head."""

    def __init__(self, current: str | None, head: str, *, has_tables: bool, known: bool) -> None:
        self.current, self.head, self.has_tables, self.known = current, head, has_tables, known
        super().__init__(self.message())

    def message(self, fix: str = "orderbus db upgrade") -> str:
        """One line; `fix` is the command that upgrades this database (the CLI adds its flags)."""
        if not self.known:
            return (
                f"the database schema is at {self.current}, which this orderbus does not know "
                f"(it needs {self.head}): a newer orderbus upgraded it; run that version"
            )
        if self.current is None:
            at = "from before migrations" if self.has_tables else "empty"
            return f"the database schema is {at}, this orderbus needs {self.head}: run `{fix}`"
        return f"the database schema is at {self.current}, this orderbus needs {self.head}: run `{fix}`"


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL"


def make_engine(url: str) -> Engine:
    try:
        return _make_engine(url)
    except ArgumentError as exc:  # unparsable, or a dialect SQLAlchemy does not know
        raise DatabaseUnreachable(
            f"{shown_url(url)} is not a usable database URL (e.g. sqlite:///path/orderbus.db, "
            f"postgresql+psycopg://user@host/db): {_one_line(exc)}"
        ) from None
    except ImportError as exc:  # the dialect's driver is not installed
        raise DatabaseUnreachable(f"no driver for {shown_url(url)}: {exc}") from None


def _make_engine(url: str) -> Engine:
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
    """The models' tables without migration history: for tests' throw-away databases, where it is
    faster than `upgrade`; tests/integration/test_migrations.py keeps the two the same."""
    SQLModel.metadata.create_all(engine)


def head() -> str:
    """The revision this code needs."""
    revision = _scripts().get_current_head()
    assert revision is not None, "core/migrations/versions has no revision"
    return revision


def current(engine: Engine) -> str | None:
    """The database's revision; None for an empty database or one made before migrations."""
    with _connected(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_current(engine: Engine) -> None:
    """Raise `SchemaOutOfDate` unless the database is at `head()`: a process that shares its
    database never changes the schema under the others; `orderbus db upgrade` does, once."""
    with _connected(engine) as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
        if revision == head():
            return
        has_tables = bool(_tables(connection))
    raise SchemaOutOfDate(revision, head(), has_tables=has_tables, known=_known(revision))


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to `revision` in one transaction; returns (before, after).

    A database made before migrations (tables, no version table) is first stamped with
    `FIRST_REVISION`, but only when its tables, columns and indexes are exactly that revision's."""
    with _migrating(engine) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        if not _known(before):
            raise SchemaOutOfDate(before, head(), has_tables=True, known=False)
        if before is None and _tables(connection):
            _require_release_schema(connection)
            MigrationContext.configure(connection).stamp(_scripts(), FIRST_REVISION)
        try:
            command.upgrade(_config(connection), revision)
        except CommandError as exc:
            raise DatabaseError(f"cannot upgrade to {revision}: {_one_line(exc)}") from None
        after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)
    return before, after


def new_revision(message: str) -> Path | None:
    """Write the revision that takes the head schema to the models' (autogenerated against a
    scratch database, so no real one is needed); None when they already agree."""
    scratch = create_engine("sqlite://")
    with scratch.begin() as connection:
        config = _config(connection)
        command.upgrade(config, "head")
        written = command.revision(
            config,
            message=message,
            autogenerate=True,
            rev_id=f"{int(head()) + 1:04d}",
            process_revision_directives=_skip_empty,
        )
    scratch.dispose()
    scripts = written if isinstance(written, list) else [written]
    return Path(scripts[0].path) if scripts and scripts[0] is not None else None


def _skip_empty(_context: MigrationContext, _revision: object, directives: list[MigrationScript]) -> None:
    if all(script.upgrade_ops is None or script.upgrade_ops.is_empty() for script in directives):
        directives[:] = []


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _known(revision: str | None) -> bool:
    return revision is None or revision in {script.revision for script in _scripts().walk_revisions()}


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {VERSION_TABLE}


def _one_line(exc: BaseException) -> str:
    text = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


@contextmanager
def _connected(engine: Engine) -> Iterator[Connection]:
    try:
        connection = engine.connect()
    except DBAPIError as exc:  # a file that is a directory, a server that does not answer, a bad password
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseUnreachable(f"cannot open the database {where}: {_one_line(exc)}") from None
    with connection:
        yield connection


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction for a whole migration. On SQLite, foreign keys are off
    meanwhile (batch mode drops and recreates tables others refer to; the pragma only takes
    effect outside a transaction) and checked before the commit."""
    with _connected(engine) as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw: Any = connection.connection.driver_connection  # no transaction begun yet
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():  # SQLite: BEGIN IMMEDIATE under make_engine's writer lock
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                yield connection
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise DatabaseError("the migration left rows whose foreign keys point nowhere; nothing was changed")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


Layout = dict[str, set[tuple[str, ...]]]


def _layout(connection: Connection) -> Layout:
    """Tables with their columns (name, nullable) and index names: what must match for a
    database without migration history to be taken for the first revision's."""
    inspector = inspect(connection)
    return {
        table: {("column", c["name"], "NULL" if c["nullable"] else "NOT NULL") for c in inspector.get_columns(table)}
        | {("index", str(i["name"])) for i in inspector.get_indexes(table) if "duplicates_constraint" not in i}
        for table in _tables(connection)
    }


@functools.cache
def _release_layout() -> Layout:
    scratch = create_engine("sqlite://")
    with scratch.begin() as connection:
        command.upgrade(_config(connection), FIRST_REVISION)
        layout = _layout(connection)
    scratch.dispose()
    return layout


def _require_release_schema(connection: Connection) -> None:
    found, wanted = _layout(connection), _release_layout()
    if found == wanted:
        return
    differences = [f"table {t} missing" for t in sorted(wanted.keys() - found.keys())]
    differences += [f"table {t} unexpected" for t in sorted(found.keys() - wanted.keys())]
    for table in sorted(wanted.keys() & found.keys()):
        differences += [f"{table}: {' '.join(item)} missing" for item in sorted(wanted[table] - found[table])]
        differences += [f"{table}: {' '.join(item)} unexpected" for item in sorted(found[table] - wanted[table])]
    shown = "; ".join(differences[:5]) + ("; …" if len(differences) > 5 else "")
    raise DatabaseError(
        "the database has tables but no migration history, and they are not the schema orderbus "
        f"{FIRST_REVISION} expects ({shown}); nothing was changed"
    )
