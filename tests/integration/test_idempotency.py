"""`Idempotency-Key` through the whole app, in-process, on a real SQLite file.

What a client may retry (orders, refunds, status and stock changes) must be done once per key:
the retry gets the first answer, another body with the key is refused, and nothing is written
twice. The rows are counted with connections of their own, so only committed state counts.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from bridge.sweeper import Sweeper, prune_idempotency_keys
from core.models import IdempotencyRecord, utcnow
from core.unit_of_work import UnitOfWork
from tests.support import App, ShiftedClock, add_burger_and_fries


@pytest.fixture
def bistro(app: App) -> dict[str, Any]:
    rid = app.add_restaurant("A", "a@example.com")
    admin = app.http(app.api_token("admin-a", "admin", rid))
    burger, fries = add_burger_and_fries(admin, rid, stock=10, low_stock=3)
    return {"rid": rid, "admin": admin, "burger": burger, "fries": fries}


def count(app: App, table: str) -> int:
    with app.engine.connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def events(app: App, rid: int) -> list[dict]:
    client = app.http(app.api_token("reader", "admin", rid))
    return client.get(f"/restaurants/{rid}/events", params={"after": 0, "limit": 1000}).json()


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def an_order(bistro: dict[str, Any], quantity: int = 1) -> dict[str, Any]:
    return {"items": [{"menu_item_id": bistro["burger"]["id"], "quantity": quantity}], "table_name": "T4"}


def test_the_same_key_and_body_get_the_first_answer_and_one_order(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    first = admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed("order-1"))
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    orders, seq = count(app, "orders"), len(events(app, rid))
    again = admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed("order-1"))
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert count(app, "orders") == orders == 1 and len(events(app, rid)) == seq
    stock = admin.get(f"/restaurants/{rid}/inventory").json()["data"]
    assert next(item for item in stock if item["id"] == bistro["burger"]["id"])["stock_quantity"] == 9
    # key order and spacing of the JSON do not make it another request
    reordered = b'{"table_name": "T4",  "items": [{"quantity": 1, "menu_item_id": %d}]}' % bistro["burger"]["id"]
    replay = admin.post(
        f"/restaurants/{rid}/orders",
        content=reordered,
        headers={**keyed("order-1"), "content-type": "application/json"},
    )
    assert replay.status_code == 201 and replay.json() == first.json() and count(app, "orders") == 1


def test_the_same_key_with_another_body_is_422_and_writes_nothing(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    assert admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed("k")).status_code == 201
    before = (count(app, "orders"), len(events(app, rid)), count(app, "idempotency_record"))
    other = admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro, 2), headers=keyed("k"))
    assert other.status_code == 422 and "already used with a different request" in other.json()["detail"]
    assert (count(app, "orders"), len(events(app, rid)), count(app, "idempotency_record")) == before


def test_every_retryable_write_is_done_once_per_key(app: App, bistro):
    rid, admin, burger = bistro["rid"], bistro["admin"], bistro["burger"]["id"]
    order = admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro)).json()
    writes = [
        ("post", f"/restaurants/{rid}/orders/{order['id']}/status", {"status": "preparing"}),
        ("post", f"/restaurants/{rid}/orders/{order['id']}/pay", None),
        ("post", f"/restaurants/{rid}/orders/{order['id']}/refunds", {"amount_cents": 100, "reason": "cold"}),
        ("post", f"/restaurants/{rid}/inventory/{burger}/adjust", {"delta": 5, "reason": "delivery"}),
        ("post", f"/restaurants/{rid}/inventory/{burger}/damage", {"quantity": 2}),
        ("put", f"/restaurants/{rid}/inventory/{burger}/threshold", {"low_stock_threshold": 4}),
    ]
    for method, path, body in writes:
        first = admin.request(method.upper(), path, json=body, headers=keyed(f"{path}-1"))
        assert first.status_code == 200, (path, first.text)
        seq = len(events(app, rid))
        again = admin.request(method.upper(), path, json=body, headers=keyed(f"{path}-1"))
        assert (again.status_code, again.json()) == (200, first.json()), path
        assert again.headers["idempotent-replayed"] == "true" and len(events(app, rid)) == seq, path
    final = admin.get(f"/restaurants/{rid}/orders/{order['id']}").json()
    assert final["status"] == "preparing" and final["refunded_cents"] == 100
    item = next(i for i in admin.get(f"/restaurants/{rid}/inventory").json()["data"] if i["id"] == burger)
    assert (item["stock_quantity"], item["damaged_quantity"]) == (9 + 5, 2)
    # a key is scoped to its route: the status key on the refund route is a request of its own
    path = f"/restaurants/{rid}/orders/{order['id']}/refunds"
    reused = admin.post(path, json={"amount_cents": 50}, headers=keyed(writes[0][1] + "-1"))
    assert reused.status_code == 200 and reused.json()["refunded_cents"] == 150


def test_different_callers_with_the_same_key_are_independent(app: App, bistro):
    rid = bistro["rid"]
    other_rid = app.add_restaurant("B", "b@example.com")
    other_admin = app.http(app.api_token("admin-b", "admin", other_rid))
    _, fries_b = add_burger_and_fries(other_admin, other_rid, stock=5, low_stock=1)
    staff = app.http(app.api_token("staff-a", "staff", rid))
    body = an_order(bistro)
    a = bistro["admin"].post(f"/restaurants/{rid}/orders", json=body, headers=keyed("shared"))
    b = staff.post(f"/restaurants/{rid}/orders", json=body, headers=keyed("shared"))
    c = other_admin.post(
        f"/restaurants/{other_rid}/orders",
        json={"items": [{"menu_item_id": fries_b["id"], "quantity": 1}]},
        headers=keyed("shared"),
    )
    assert a.status_code == b.status_code == c.status_code == 201
    assert len({a.json()["id"], b.json()["id"], c.json()["id"]}) == 3
    assert "idempotent-replayed" not in b.headers and "idempotent-replayed" not in c.headers
    assert count(app, "orders") == 3


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "naïve", "tab\there", "new\nline", "\x7f"],
    ids=["empty", "too-long", "non-ascii", "tab", "newline", "del"],
)
def test_bad_keys_are_400_and_write_nothing(app: App, bistro, key: str):
    rid = bistro["rid"]
    response = bistro["admin"].post(
        f"/restaurants/{rid}/orders",
        json=an_order(bistro),
        headers=[(b"Idempotency-Key", key.encode("latin-1"))],
    )
    assert response.status_code == 400, response.text
    assert "1 to 255 printable ASCII characters" in response.json()["detail"]
    assert count(app, "orders") == 0 and count(app, "idempotency_record") == 0


def test_the_longest_and_oddest_printable_keys_are_accepted(app: App, bistro):
    rid = bistro["rid"]
    for key in ("k" * 255, " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ "):
        response = bistro["admin"].post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed(key))
        assert response.status_code == 201, response.text
    assert count(app, "idempotency_record") == 2


def test_a_refused_request_keeps_no_key_and_its_retry_runs_again(app: App, bistro):
    """A 409 changed nothing, so there is nothing to replay: after a delivery the retry succeeds."""
    rid, admin = bistro["rid"], bistro["admin"]
    too_many = an_order(bistro, 11)
    refused = admin.post(f"/restaurants/{rid}/orders", json=too_many, headers=keyed("big"))
    assert refused.status_code == 409 and count(app, "idempotency_record") == 0
    burger = bistro["burger"]["id"]
    assert admin.post(f"/restaurants/{rid}/inventory/{burger}/adjust", json={"delta": 5}).status_code == 200
    retried = admin.post(f"/restaurants/{rid}/orders", json=too_many, headers=keyed("big"))
    assert retried.status_code == 201 and count(app, "orders") == 1
    invalid = admin.post(f"/restaurants/{rid}/orders", json={"items": []}, headers=keyed("bad-body"))
    assert invalid.status_code == 422 and count(app, "idempotency_record") == 1


def test_without_a_key_every_request_is_its_own(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    for _ in range(2):
        assert admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro)).status_code == 201
    assert count(app, "orders") == 2 and count(app, "idempotency_record") == 0


def test_concurrent_requests_with_one_key_write_once(app: App, bistro):
    """Eight clients fire the same keyed order at once: one order, one event, eight equal answers."""
    rid = bistro["rid"]
    token = app.api_token("admin-a", "admin", rid)
    answers: list[httpx.Response] = []
    start = threading.Barrier(8)

    def fire() -> None:
        client = app.http(token)
        start.wait()
        answers.append(client.post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed("race")))

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 8 and {answer.status_code for answer in answers} == {201}
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers) == 7
    assert count(app, "orders") == 1
    assert [event["type"] for event in events(app, rid)].count("new_order") == 1


def test_a_key_expires_after_24_hours_and_the_sweeper_prunes_it(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    first = admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed("day-old"))
    assert first.status_code == 201
    clock = ShiftedClock()
    sweeper = Sweeper(lambda: UnitOfWork(app.engine), [prune_idempotency_keys(clock)])
    clock.ahead = (timedelta(hours=24) - timedelta(minutes=1)).total_seconds()
    sweeper.run_once()
    assert count(app, "idempotency_record") == 1  # not yet a day old: kept
    with UnitOfWork(app.engine) as uow:  # the record is a day and a minute old
        uow.session.execute(update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=24, minutes=1)))
        uow.commit()
    again = admin.post(f"/restaurants/{rid}/orders", json=an_order(bistro), headers=keyed("day-old"))
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"] and count(app, "idempotency_record") == 1
    clock.ahead = timedelta(hours=24, seconds=1).total_seconds()
    sweeper.run_once()
    assert count(app, "idempotency_record") == 0
