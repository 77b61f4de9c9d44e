"""Accounts made the way real ones are, for the API tests: the CLI's super_admin (the service), and
restaurants with their first admin through HTTP; every login through `/auth/login` (real argon2)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from core.models import User
from core.services import users
from core.unit_of_work import UnitOfWork
from tests.support import App

BOSS, BOSS_PASSWORD = "boss@chain.example", "the boss password"


def make_super_admin(engine: Engine) -> None:
    with UnitOfWork(engine) as uow:
        users.create_super_admin(uow, BOSS, "Boss", BOSS_PASSWORD)
        uow.commit()


def login(app: App, email: str, password: str) -> TestClient:
    answer = app.http().post("/auth/login", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return app.http(answer.json()["access_token"])


def user_rows(engine: Engine) -> list[tuple[str, str, int | None]]:
    with UnitOfWork(engine) as uow:
        return sorted((u.email, u.role, u.restaurant_id) for u in uow.session.exec(select(User)))


def make_chain(app: App) -> dict[str, Any]:
    """A super_admin who logged in and made two restaurants through HTTP, each with its first admin."""
    make_super_admin(app.engine)
    boss = login(app, BOSS, BOSS_PASSWORD)
    made: dict[str, Any] = {"boss": boss}
    for name, email in (("Bistro", "ann@bistro.example"), ("Cafe", "bob@cafe.example")):
        answer = boss.post("/restaurants", json={"name": name, "admin": {"email": email, "name": f"{name} admin"}})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert answer.headers["cache-control"] == "no-store"
        assert body["admin"]["email"] == email and body["admin"]["role"] == "admin"
        assert body["admin"]["restaurant_id"] == body["id"]
        made[name] = {
            "rid": body["id"],
            "admin": login(app, email, body["admin"]["password"]),
            "id": body["admin"]["id"],
        }
    return made
