"""The request's unit of work: the API commits once, after the endpoint and before the response.

In-process (`TestClient(create_app(...))`) over a real SQLite file. A commit that fails must not
answer 2xx: the client would believe in a change that never happened. The failure is a real one,
SQLite refusing the COMMIT: foreign keys are checked at commit time here, so a row pointing nowhere
passes its INSERT and fails only when the transaction ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text
from sqlmodel import SQLModel, select

from api.deps import UowDep
from api.main import create_app
from config.settings import Settings
from core.db import create_schema, make_engine
from core.domain import DomainError
from core.models import Menu, Notification, Restaurant
from core.tokens import TokenService, load_or_create_key


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'api.db'}")
    create_schema(engine)

    @event.listens_for(engine, "begin")
    def _check_foreign_keys_at_commit(connection: Any) -> None:
        connection.exec_driver_sql("PRAGMA defer_foreign_keys=ON")  # reset by SQLite at every transaction's end

    return engine


class Api:
    def __init__(self, app: FastAPI, engine: Engine, tokens: TokenService, woken: list[int]) -> None:
        self.app, self.engine, self.tokens, self.woken = app, engine, tokens, woken
        self.client = TestClient(app, raise_server_exceptions=False)

    def headers(self, role: str = "super_admin", rid: int | None = None) -> dict[str, str]:
        token = self.tokens.issue(sub="user-1", role=role, rid=rid, audience="api", ttl_seconds=60)
        return {"authorization": f"Bearer {token}"}

    def count(self, model: type[SQLModel]) -> int:
        with self.engine.connect() as connection:  # a connection of its own: sees committed rows only
            return connection.execute(text(f"SELECT count(*) FROM {model.__tablename__}")).scalar_one()


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> Iterator[Api]:
    woken: list[int] = []
    tokens = TokenService(load_or_create_key(tmp_path))
    app = create_app(Settings(data_dir=tmp_path), engine, tokens, lambda: woken.append(1))

    @app.post("/test/dangling-note")
    def dangling_note(uow: UowDep) -> dict[str, bool]:
        """Writes a notification of a restaurant that does not exist: the INSERT passes, the COMMIT fails."""
        uow.session.add(Notification(restaurant_id=999_999, kind="test", title="dangling"))
        uow.session.flush()
        return {"ok": True}

    @app.post("/test/write-then-refuse")
    def write_then_refuse(uow: UowDep) -> dict[str, bool]:
        uow.session.add(Restaurant(name="half done"))
        uow.session.flush()
        raise DomainError("refused after a write")

    with TestClient(app, raise_server_exceptions=False):
        yield Api(app, engine, tokens, woken)


def test_a_commit_that_fails_is_not_answered_2xx(api: Api):
    response = api.client.post("/test/dangling-note")
    assert response.status_code == 500
    assert api.count(Notification) == 0
    created = api.client.post("/api/v1/restaurants", json={"name": "After"}, headers=api.headers())
    assert created.status_code == 201, created.text  # the failed request released the database


def test_an_endpoint_that_raises_rolls_its_writes_back(api: Api):
    response = api.client.post("/test/write-then-refuse")
    assert response.status_code == 409 and response.json() == {"detail": "refused after a write"}
    assert api.count(Restaurant) == 0


def test_a_request_commits_once_and_then_wakes_the_relay(api: Api):
    commits: list[int] = []
    event.listen(api.engine, "commit", lambda _connection: commits.append(1))
    created = api.client.post("/api/v1/restaurants", json={"name": "Bistro"}, headers=api.headers())
    assert created.status_code == 201 and api.count(Restaurant) == 1
    assert len(commits) == 1 and api.woken == []  # no event written: nothing to wake
    rid = created.json()["id"]
    seen: list[int] = []
    api.woken.clear()

    def wake() -> None:  # the relay must find the event committed when it wakes
        seen.append(api.count(Menu))

    api.app.state.wake_relay = wake
    menu = api.client.post(f"/api/v1/restaurants/{rid}/menus", json={"name": "Dinner"}, headers=api.headers())
    assert menu.status_code == 201, menu.text
    assert seen == [1] and len(commits) == 2
    with api.engine.connect() as connection:
        assert connection.execute(select(Menu.name)).scalars().all() == ["Dinner"]
