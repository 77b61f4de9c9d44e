"""What the API answers when PostgreSQL cannot serve a request: a deadlock PostgreSQL resolves by
aborting the request's transaction, and a server that is not there. Both 503 with Retry-After and a
one-line JSON error, counted by reason; never a 500. (The server killed mid-burst and started again
is tests/e2e/test_postgres_restart.py.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import make_url

from config.settings import Settings
from core.db import create_schema, make_engine
from scripts.ports import free_port
from tests.postgres import fresh_database
from tests.support import App, add_burger_and_fries, wait_for

METRIC = "orderbus_http_database_unavailable_total"


@pytest.fixture
def pg_app(tmp_path) -> Iterator[tuple[App, str]]:
    with fresh_database("db_errors") as url:
        engine = make_engine(url)
        create_schema(engine)
        yield App(Settings(data_dir=tmp_path / "data", database_url=url), engine), url
        engine.dispose()


def counted(reason: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"reason": reason}) or 0.0


def one_line_503(response, reason: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": f"the database is unavailable ({reason}); retry shortly"}
    assert int(response.headers["retry-after"]) > 0


def test_a_deadlock_the_server_breaks_is_503_and_changes_nothing(pg_app: tuple[App, str]):
    """Another session holds the restaurant row and then wants the burger the order holds: the
    cycle our lock order never makes, made on purpose. PostgreSQL aborts the order (its
    deadlock_timeout fires first: the other session's is 10 s), and the API answers 503."""
    app, url = pg_app
    rid = app.add_restaurant("Deadlock Diner", "admin@deadlock.test")
    token = app.api_token("admin@deadlock.test", "admin", rid)
    burger, _fries = add_burger_and_fries(app.http(token), rid, stock=5, low_stock=0)
    raw = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    before = counted("deadlock")
    with psycopg.connect(raw) as other, psycopg.connect(raw, autocommit=True) as watch:
        other.execute("SET deadlock_timeout = '10s'")
        other.execute("UPDATE restaurant SET name = name WHERE id = %s", (rid,))
        answers: list = []
        request = threading.Thread(
            target=lambda: answers.append(
                app.http(token).post(
                    f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": burger["id"], "quantity": 1}]}
                )
            )
        )
        request.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        wait_for(lambda: watch.execute(waiting).fetchone() == (1,), timeout=20)  # the order holds the burger
        other.execute("SELECT id FROM menu_item WHERE id = %s FOR UPDATE", (burger["id"],))  # the cycle
        request.join(30)
        other.rollback()
    assert len(answers) == 1
    one_line_503(answers[0], "deadlock")
    assert counted("deadlock") == before + 1
    after = app.http(token).get(f"/restaurants/{rid}/menu-items/{burger['id']}").json()
    assert after["stock_quantity"] == 5  # the aborted order took nothing
    assert app.http(token).get(f"/restaurants/{rid}/orders").json() == {"data": [], "count": 0}


def test_a_server_that_does_not_answer_is_503_on_every_route_that_needs_it(tmp_path):
    url = f"postgresql+psycopg://orderbus@127.0.0.1:{free_port()}/orderbus"  # nothing listens there
    app = App(Settings(data_dir=tmp_path / "data", database_url=url), make_engine(url))
    token = app.api_token("admin@nowhere.test", "admin", 1)
    before = counted("unavailable")
    client = app.http(token)
    answers = [
        client.post("/restaurants/1/orders", json={"items": [{"menu_item_id": 1, "quantity": 1}]}),
        client.get("/restaurants/1/orders"),
        client.post("/restaurants/1/orders/1/refunds", json={"amount_cents": 100, "reason": "cold"}),
        client.get("/restaurants/1/events?after=0"),
    ]
    for answer in answers:
        one_line_503(answer, "unavailable")
    assert counted("unavailable") == before + len(answers)
    metrics = app.http().get("http://testserver/metrics").text
    assert f'{METRIC}{{reason="unavailable"}}' in metrics
    ready = app.http().get("http://testserver/readyz")  # a load balancer takes this instance out meanwhile
    assert ready.status_code == 503 and ready.json()["failed"] == ["database"]


@pytest.mark.parametrize("field", ["name", "active"])
def test_a_null_for_a_required_column_is_422_before_the_database_sees_it(app: App, field: str):
    """A PATCH with `null` where the column is NOT NULL was a 500 (IntegrityError at the flush)."""
    rid = app.add_restaurant("Null Diner", "admin@null.test")
    client = app.http(app.api_token("admin@null.test", "admin", rid))
    menu = client.post(f"/restaurants/{rid}/menus", json={"name": "Dinner"}).json()
    refused = client.patch(f"/restaurants/{rid}/menus/{menu['id']}", json={field: None})
    assert refused.status_code == 422, refused.text
    assert f"{field} may not be null" in refused.text
    assert client.get(f"/restaurants/{rid}/menus/{menu['id']}").json() == menu
    cleared = client.patch(
        f"/restaurants/{rid}/menu-items/{item_of(client, rid, menu['id'])}", json={"category_id": None}
    )
    assert cleared.status_code == 200, cleared.text  # null where the column may be empty still clears it


def item_of(client, rid: int, menu_id: int) -> int:
    made = client.post(f"/restaurants/{rid}/menu-items", json={"menu_id": menu_id, "name": "Soup", "price_cents": 500})
    assert made.status_code == 201, made.text
    return made.json()["id"]
