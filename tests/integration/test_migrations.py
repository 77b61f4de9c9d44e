"""The migrations and the models describe one schema, a data directory of the release before
migrations upgrades in place with its rows, and a database at another revision is refused."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, Engine, inspect, text
from sqlmodel import Session, SQLModel

from cli.runtime import Parts
from config.settings import Settings
from core import db
from tests.postgres import fresh_database

RELEASE_DATA_DIR = Path(__file__).parents[1] / "golden" / "orderbus-0.1-data-dir.sql"


def differences(engine: Engine) -> list:
    """What `orderbus db revision` would write: the models against the database, types included."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, SQLModel.metadata)


def release_data_dir(data_dir: Path) -> Path:
    """The SQLite file of a data directory that orderbus 0.1 made (tables, rows, no version table)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "orderbus.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(RELEASE_DATA_DIR.read_text())
    return path


def sqlite_file(path: Path) -> Engine:
    return db.make_engine(f"sqlite:///{path}")


def test_the_migrations_build_exactly_the_models_schema(tmp_path):
    """A model column, table or index without its revision fails here: run `orderbus db revision`."""
    engine = sqlite_file(tmp_path / "fresh.db")
    assert db.upgrade(engine) == (None, db.head())
    assert differences(engine) == []
    engine.dispose()


def test_the_drift_check_sees_a_column_the_migrations_lack(tmp_path):
    """The check above can fail: a column dropped from the database shows up as a difference."""
    engine = sqlite_file(tmp_path / "fresh.db")
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE orders DROP COLUMN notes"))
    assert [(d[0], d[3].name) for d in differences(engine)] == [("add_column", "notes")]
    engine.dispose()


def test_up_upgrades_a_release_data_dir_in_place_and_keeps_its_rows(tmp_path):
    path = release_data_dir(tmp_path / "data")
    engine = sqlite_file(path)
    with pytest.raises(db.SchemaOutOfDate, match=r"from before migrations.*orderbus db upgrade"):
        db.check_current(engine)
    engine.dispose()

    parts = Parts.build(Settings(data_dir=tmp_path / "data"), upgrade=True)  # what `orderbus up` does at start
    assert db.current(parts.engine) == db.head()
    assert differences(parts.engine) == []
    with Session(parts.engine) as session:
        assert session.execute(text("SELECT name, event_seq FROM restaurant")).all() == [("Demo Bistro", 15)]
        # 0005: a restaurant made before currencies reads EUR, and is not archived
        assert session.execute(text("SELECT currency, archived_at FROM restaurant")).all() == [("EUR", None)]
        assert session.execute(text("SELECT status, version FROM orders")).all() == [("preparing", 2)]
        # 0009: placed 06:33 UTC on 2 December, the 2nd's service under the defaults (UTC, day from 04:00)
        dated = session.execute(text("SELECT number, business_date FROM orders")).all()
        assert [(number, str(day)) for number, day in dated] == [(1, "2026-12-02")]
        assert session.execute(text("SELECT timezone, day_starts_at FROM restaurant")).all() == [("UTC", 4)]
        assert session.execute(text("SELECT count(*) FROM outbox_event")).scalar_one() == 15
    parts.engine.dispose()

    again = Parts.build(Settings(data_dir=tmp_path / "data"), upgrade=False)  # `orderbus api` now starts
    again.engine.dispose()


def test_a_database_with_other_tables_is_refused_and_left_alone(tmp_path):
    path = release_data_dir(tmp_path / "data")
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE orders ADD COLUMN tip_cents INTEGER")
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    engine = sqlite_file(path)
    with pytest.raises(db.DatabaseError) as refused:
        db.upgrade(engine)
    message = str(refused.value)
    assert "no migration history" in message and "\n" not in message
    assert "table notes unexpected" in message and "orders: column tip_cents" in message
    assert "alembic_version" not in inspect(engine).get_table_names()
    assert_writer_free(engine)
    engine.dispose()


def test_a_database_from_a_newer_orderbus_is_refused(tmp_path):
    engine = sqlite_file(tmp_path / "newer.db")
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for attempt in (db.check_current, db.upgrade):
        with pytest.raises(db.SchemaOutOfDate, match="9999, which this orderbus does not know"):
            attempt(engine)
    assert db.current(engine) == "9999"
    engine.dispose()


def test_an_empty_database_is_out_of_date_until_upgraded(tmp_path):
    engine = sqlite_file(tmp_path / "empty.db")
    with pytest.raises(db.SchemaOutOfDate, match=f"schema is empty, this orderbus needs {db.head()}"):
        db.check_current(engine)
    assert db.current(engine) is None
    db.upgrade(engine)
    db.check_current(engine)
    assert db.upgrade(engine) == (db.head(), db.head())
    engine.dispose()


def test_an_upgrade_waits_for_the_writer_and_frees_it(tmp_path):
    """The upgrade runs on one connection under make_engine's writer lock: it queues behind a
    transaction of another thread instead of deadlocking, and leaves the lock free."""
    engine = sqlite_file(release_data_dir(tmp_path / "data"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with Session(engine) as session:
            session.execute(text("INSERT INTO restaurant (name, event_seq) VALUES ('Second Bistro', 0)"))
            held.set()
            release.wait(10)
            session.commit()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    upgraded: list[tuple[str | None, str | None]] = []
    upgrader = threading.Thread(target=lambda: upgraded.append(db.upgrade(engine)))
    upgrader.start()
    time.sleep(0.3)
    assert upgraded == []  # waiting its turn
    release.set()
    holder.join(5)
    upgrader.join(10)
    assert upgraded == [(None, db.head())]
    with Session(engine) as session:  # the row committed first is still there
        assert session.execute(text("SELECT count(*) FROM restaurant")).scalar_one() == 2
    assert_writer_free(engine)
    engine.dispose()


def test_foreign_keys_are_back_on_after_an_upgrade(tmp_path):
    """Migrations run with SQLite's foreign keys off (batch mode recreates tables); the pooled
    connection must not keep them off."""
    engine = sqlite_file(tmp_path / "bus.db")
    db.upgrade(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    engine.dispose()


def assert_writer_free(engine: Engine) -> None:
    """A write on another thread gets its turn at once (the lock would make it wait 30 s)."""
    done = threading.Event()

    def write() -> None:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            session.commit()
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(5), "the writer lock was not released"


def test_the_migrations_build_exactly_the_models_schema_on_postgresql():
    """The same drift check on PostgreSQL, whose types are stricter (INTEGER is 32-bit there)."""
    with fresh_database("migrations") as url:
        engine = db.make_engine(url)
        try:
            assert db.upgrade(engine) == (None, db.head())
            assert differences(engine) == []
            columns = {c["name"]: c["type"] for c in inspect(engine).get_columns("orders")}
            assert isinstance(columns["total_cents"], BigInteger)
        finally:
            engine.dispose()


def backfill_numbers(engine: Engine) -> None:
    """Orders of two restaurants placed interleaved before 0004 get 1, 2, 3… per restaurant in id order,
    and each restaurant's counter continues after its last number."""
    assert db.upgrade(engine, "0003") == (None, "0003")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO restaurant (id, name, event_seq) VALUES (1, 'A', 0), (2, 'B', 0)"))
        connection.execute(text("INSERT INTO restaurant (id, name, event_seq) VALUES (3, 'no orders', 0)"))
        for order_id, restaurant_id in enumerate([1, 2, 2, 1, 2, 1, 1], start=1):
            connection.execute(
                text(
                    "INSERT INTO orders (id, restaurant_id, status, notes, total_cents, refunded_cents, version,"
                    " created_at, updated_at) VALUES (:id, :rid, 'pending', '', 0, 0, 1, :now, :now)"
                ),
                {"id": order_id, "rid": restaurant_id, "now": "2026-12-02 12:00:00"},
            )
    db.upgrade(engine)
    assert differences(engine) == []
    with engine.connect() as connection:
        numbered = connection.execute(text("SELECT id, restaurant_id, number FROM orders ORDER BY id")).all()
        counters = connection.execute(text("SELECT id, order_seq FROM restaurant ORDER BY id")).all()
    assert [tuple(row) for row in numbered] == [
        (1, 1, 1),
        (2, 2, 1),
        (3, 2, 2),
        (4, 1, 2),
        (5, 2, 3),
        (6, 1, 3),
        (7, 1, 4),
    ]
    assert [tuple(row) for row in counters] == [(1, 4), (2, 3), (3, 0)]


def test_order_numbers_are_backfilled_per_restaurant(tmp_path):
    engine = sqlite_file(tmp_path / "numbers.db")
    try:
        backfill_numbers(engine)
    finally:
        engine.dispose()


def test_order_numbers_are_backfilled_per_restaurant_on_postgresql():
    with fresh_database("numbers") as url:
        engine = db.make_engine(url)
        try:
            backfill_numbers(engine)
        finally:
            engine.dispose()


def backfill_business_dates(engine: Engine) -> None:
    """0008: orders made before get the business date of their `created_at` under the defaults (UTC, day from
    04:00), the counter's day is its restaurant's last one, and an order placed after the upgrade on that
    day continues its numbers instead of giving one twice."""
    from datetime import UTC, date, datetime

    from core.commands import MenuIn, MenuItemIn, OrderIn, OrderItemIn
    from core.models import Menu
    from core.services import menu, orders
    from core.unit_of_work import UnitOfWork

    assert db.upgrade(engine, "0005") == (None, "0005")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO restaurant (id, name, event_seq, order_seq, currency) VALUES (1, 'A', 0, 3, 'EUR')")
        )
        connection.execute(
            text("INSERT INTO restaurant (id, name, event_seq, order_seq, currency) VALUES (2, 'B', 0, 0, 'EUR')")
        )
        for number, created_at in enumerate(["2026-06-01 12:00:00", "2026-06-02 02:30:00", "2026-06-02 04:00:00"], 1):
            connection.execute(
                text(
                    "INSERT INTO orders (restaurant_id, number, status, notes, total_cents, refunded_cents,"
                    " version, created_at, updated_at) VALUES (1, :number, 'pending', '', 0, 0, 1, :at, :at)"
                ),
                {"number": number, "at": created_at},
            )
    db.upgrade(engine)
    assert differences(engine) == []
    with engine.connect() as connection:
        dated = connection.execute(text("SELECT number, business_date FROM orders ORDER BY id")).all()
        counters = connection.execute(
            text("SELECT id, order_seq, order_day, timezone, day_starts_at FROM restaurant ORDER BY id")
        ).all()
    assert [(row[0], str(row[1])) for row in dated] == [
        (1, "2026-06-01"),
        (2, "2026-06-01"),  # 02:30 UTC: the evening before's service
        (3, "2026-06-02"),
    ]
    assert [(row[0], row[1], None if row[2] is None else str(row[2]), row[3], row[4]) for row in counters] == [
        (1, 3, "2026-06-02", "UTC", 4),
        (2, 0, None, "UTC", 4),
    ]
    with UnitOfWork(engine) as uow:
        menu_id = menu.create_row(uow, Menu, 1, MenuIn(name="Menu")).id
        assert menu_id is not None
        soup = menu.create_item(uow, 1, MenuItemIn(menu_id=menu_id, name="Soup", price_cents=100)).id
        assert soup is not None
        body = OrderIn(items=[OrderItemIn(menu_item_id=soup, quantity=1)])
        later = orders.place_order(uow, 1, body, now=datetime(2026, 6, 2, 20, 0, tzinfo=UTC)).order
        assert (later.number, later.business_date) == (4, date(2026, 6, 2))  # the day's count goes on
        uow.commit()


def test_business_dates_are_backfilled_and_numbers_go_on(tmp_path):
    engine = sqlite_file(tmp_path / "days.db")
    try:
        backfill_business_dates(engine)
    finally:
        engine.dispose()


def backfill_payments(engine: Engine) -> None:
    """0007: an order refunded before it is paid (it could not have been refunded otherwise), the others
    unpaid; a notification read before has a `read_at` (retention prunes by it), an unread one none."""
    assert db.upgrade(engine, "0005") == (None, "0005")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO restaurant (id, name, event_seq, order_seq, currency) VALUES (1, 'A', 0, 2, 'EUR')")
        )
        for order_id, refunded in [(1, 0), (2, 250)]:
            connection.execute(
                text(
                    "INSERT INTO orders (id, restaurant_id, number, status, notes, total_cents, refunded_cents,"
                    " version, created_at, updated_at) VALUES (:id, 1, :id, 'completed', '', 1000, :refunded, 1,"
                    " :now, :now)"
                ),
                {"id": order_id, "refunded": refunded, "now": "2026-12-02 12:00:00"},
            )
        connection.execute(
            text(
                "INSERT INTO refund (id, order_id, amount_cents, reason, created_at) VALUES (1, 2, 250, 'cold', :now)"
            ),
            {"now": "2026-12-02 12:30:00"},
        )
        for note_id, read in [(1, True), (2, False)]:
            connection.execute(
                text(
                    "INSERT INTO notification (id, restaurant_id, kind, title, body, read, created_at)"
                    " VALUES (:id, 1, 'low_stock', 'Low', '', :read, :now)"
                ),
                {"id": note_id, "read": read, "now": "2026-12-02 12:00:00"},
            )
    db.upgrade(engine, "0007")
    with engine.connect() as connection:
        paid = connection.execute(text("SELECT id, paid_at IS NOT NULL FROM orders ORDER BY id")).all()
        refunds = connection.execute(text("SELECT by_sub, lines FROM refund")).all()
        found = connection.execute(text("SELECT id, read_at IS NOT NULL, dismissed_at FROM notification ORDER BY id"))
        notes = found.all()
    assert [tuple(row) for row in paid] == [(1, False), (2, True)]
    assert [(row[0], row[1] if isinstance(row[1], list) else json.loads(row[1])) for row in refunds] == [(None, [])]
    assert [tuple(row) for row in notes] == [(1, True, None), (2, False, None)]
    assert db.upgrade(engine)[1] == db.head()
    assert differences(engine) == []


def test_payments_and_read_notifications_are_backfilled(tmp_path):
    engine = sqlite_file(tmp_path / "payments.db")
    try:
        backfill_payments(engine)
    finally:
        engine.dispose()


def test_business_dates_are_backfilled_and_numbers_go_on_on_postgresql():
    with fresh_database("days") as url:
        engine = db.make_engine(url)
        try:
            backfill_business_dates(engine)
        finally:
            engine.dispose()


def test_payments_and_read_notifications_are_backfilled_on_postgresql():
    with fresh_database("payments") as url:
        engine = db.make_engine(url)
        try:
            backfill_payments(engine)
        finally:
            engine.dispose()
