"""Stable identities: a deleted row never lends its id to a new one (events, retained topics and tokens
name rows by id). SQLite needs AUTOINCREMENT on every table with an integer key (models and revision
0008, which rebuilds an existing data dir's tables); PostgreSQL's sequences never reuse."""

from __future__ import annotations

import sqlite3

from sqlalchemy import Engine, Integer, text
from sqlmodel import Session, SQLModel

from config.settings import Settings
from core import db as core_db
from core.commands import MenuItemIn
from core.services import menu
from core.unit_of_work import UnitOfWork
from tests.integration.test_migrations import differences, release_data_dir, sqlite_file
from tests.support import App


def integer_key_tables() -> list[str]:
    return sorted(
        table.name
        for table in SQLModel.metadata.sorted_tables
        if len(table.primary_key.columns) == 1 and isinstance(next(iter(table.primary_key.columns)).type, Integer)
    )


def autoincrement_tables(path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for name, sql in rows if "AUTOINCREMENT" in sql.upper()}


def test_every_model_with_an_integer_key_is_autoincrement_on_sqlite():
    """A new table without `STABLE_IDS` fails here: its ids would be reused on SQLite."""
    tables = integer_key_tables()
    assert "menu_item" in tables and "stock_movement" in tables
    lacking = [t for t in tables if not SQLModel.metadata.tables[t].dialect_options["sqlite"]["autoincrement"]]
    assert lacking == []


def test_the_migrations_make_every_integer_key_autoincrement(tmp_path):
    engine = sqlite_file(tmp_path / "fresh.db")
    core_db.upgrade(engine)
    engine.dispose()
    assert set(integer_key_tables()) <= autoincrement_tables(tmp_path / "fresh.db")


def item_body(menu_id: int, name: str) -> dict:
    return {"menu_id": menu_id, "name": name, "price_cents": 100}


def test_a_deleted_menu_item_never_lends_its_id_through_the_api(db: Engine, tmp_path):
    """The issue's case: item 7 deleted, the next item got 7 again. Also menus and categories."""
    app = App(Settings(data_dir=tmp_path / "app"), db)
    rid = app.add_restaurant("Ids", "admin@ids.example.com")
    admin = app.http(app.api_token("user-ids", "admin", rid))
    menu_id = admin.post(f"/restaurants/{rid}/menus", json={"name": "Dinner"}).json()["id"]
    first = admin.post(f"/restaurants/{rid}/menu-items", json=item_body(menu_id, "Soup")).json()["id"]
    assert admin.delete(f"/restaurants/{rid}/menu-items/{first}").status_code == 204
    second = admin.post(f"/restaurants/{rid}/menu-items", json=item_body(menu_id, "Salad")).json()["id"]
    assert second > first
    category = admin.post(f"/restaurants/{rid}/categories", json={"name": "Starters"}).json()["id"]
    assert admin.delete(f"/restaurants/{rid}/categories/{category}").status_code == 204
    assert admin.post(f"/restaurants/{rid}/categories", json={"name": "Mains"}).json()["id"] > category
    other_menu = admin.post(f"/restaurants/{rid}/menus", json={"name": "Lunch"}).json()["id"]
    assert admin.delete(f"/restaurants/{rid}/menus/{other_menu}").status_code == 204
    assert admin.post(f"/restaurants/{rid}/menus", json={"name": "Brunch"}).json()["id"] > other_menu
    deleted = [e for e in admin.get(f"/restaurants/{rid}/events").json() if e["data"].get("action") == "deleted"]
    assert [e["data"]["menu_item"]["id"] for e in deleted if "menu_item" in e["data"]] == [first]


def test_an_upgraded_release_data_dir_keeps_its_rows_and_stops_reusing_ids(tmp_path):
    """0008 rebuilds the release's tables as AUTOINCREMENT with their rows and foreign keys; then the
    last menu item (5, Espresso) deleted and another created gets 6, not 5."""
    path = release_data_dir(tmp_path / "data")
    engine = sqlite_file(path)
    core_db.upgrade(engine)
    assert differences(engine) == []
    assert set(integer_key_tables()) <= autoincrement_tables(path)
    with Session(engine) as session:
        assert session.execute(text("SELECT id, name FROM menu_item ORDER BY id")).all()[-1] == (5, "Espresso")
        assert session.execute(text("SELECT count(*) FROM outbox_event")).scalar_one() == 15
        assert session.execute(text("SELECT order_id, menu_item_id, quantity FROM order_item")).all() == [(1, 1, 2)]
        assert session.execute(text("PRAGMA foreign_key_check")).all() == []
        # the opening balance: each stocked item's figures as its first ledger line
        opening = session.execute(
            text("SELECT item_id, kind, stock_delta, stock_after FROM stock_movement ORDER BY id")
        )
        stocks = session.execute(text("SELECT id, stock_quantity FROM menu_item WHERE stock_quantity <> 0 ORDER BY id"))
        assert [(i, "counted", s, s) for i, s in stocks.all()] == [tuple(row) for row in opening.all()]
    with UnitOfWork(engine) as uow:
        menu.delete_item(uow, 1, 5)
        uow.commit()
    with UnitOfWork(engine) as uow:
        created = menu.create_item(uow, 1, MenuItemIn(menu_id=1, name="Ristretto", price_cents=300))
        uow.commit()
        assert created.id == 6
    with engine.connect() as connection:  # foreign keys are enforced again, and hold
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    engine.dispose()
