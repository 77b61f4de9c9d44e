"""Archiving a restaurant (`POST /restaurants/{id}/archive`, `core.services.archive`): its devices are
revoked, its staff removed and their sessions ended, it leaves the lists, its history stays, and
nothing can be added to it; only a super_admin may, and every refusal changes nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import select

from core.commands import DeviceIn, NewRestaurantIn
from core.domain import DomainError, Forbidden
from core.models import Device, OutboxEvent, Restaurant, User
from core.services import archive, devices, retained_state, users
from core.services.users import Actor
from core.tokens import TokenService
from core.unit_of_work import UnitOfWork
from tests.support import App, add_burger_and_fries

PRINTER = {"id": "printer-arch-1", "kind": "printer", "name": "Grill printer", "station": "grill"}


def state(engine: Engine, rid: int) -> tuple[Any, list[tuple[str, bool]], list[str], int]:
    """archived_at, (device, revoked), user emails, events: what an archive changes."""
    with UnitOfWork(engine) as uow:
        restaurant = uow.session.get(Restaurant, rid)
        assert restaurant is not None
        found = uow.session.exec(select(Device).where(Device.restaurant_id == rid).order_by(Device.id))
        people = uow.session.exec(select(User.email).where(User.restaurant_id == rid).order_by(User.email))
        events = uow.session.exec(select(OutboxEvent).where(OutboxEvent.restaurant_id == rid)).all()
        return restaurant.archived_at, [(d.id, d.revoked) for d in found], list(people), len(events)


def test_an_archived_restaurant_loses_its_devices_and_staff_and_leaves_the_lists(app: App, chain):
    boss, bistro, cafe = chain["boss"], chain["Bistro"]["rid"], chain["Cafe"]["rid"]
    admin = chain["Bistro"]["admin"]
    assert admin.post(f"/restaurants/{bistro}/devices", json=PRINTER).status_code == 201
    staff = admin.post(f"/restaurants/{bistro}/users", json={"email": "cook@bistro.example", "name": "Cook"})
    assert staff.status_code == 201, staff.text
    cafe_before = state(app.engine, cafe)

    answer = boss.post(f"/restaurants/{bistro}/archive")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["id"], body["name"], body["devices_revoked"], body["users_removed"]) == (bistro, "Bistro", 1, 2)
    archived_at, found, people, _events = state(app.engine, bistro)
    assert archived_at is not None and found == [(PRINTER["id"], True)] and people == []
    assert [r["name"] for r in boss.get("/restaurants").json()["data"]] == ["Cafe"]
    assert admin.get(f"/restaurants/{bistro}/orders").status_code == 401  # the admin's login has ended
    assert state(app.engine, cafe) == cafe_before

    again = boss.post(f"/restaurants/{bistro}/archive")  # idempotent: the same answer, nothing more done
    assert again.status_code == 200 and (again.json()["devices_revoked"], again.json()["users_removed"]) == (0, 0)
    assert again.json()["archived_at"] == body["archived_at"]


def test_an_archived_restaurant_has_no_retained_state_so_the_next_rebuild_clears_its_topics(app: App, chain):
    """The relay's rebuild republishes what `retained_state.read` lists and clears every other state topic
    the broker holds: an archived restaurant's open orders and stock leave the broker with it."""
    boss = chain["boss"]
    for name in ("Bistro", "Cafe"):
        rid, admin = chain[name]["rid"], chain[name]["admin"]
        burger, _fries = add_burger_and_fries(admin, rid, stock=10, low_stock=3)
        order = admin.post(
            f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": burger["id"], "quantity": 1}]}
        )
        assert order.status_code == 201, order.text
    with app.engine.begin() as connection:  # as if the relay had published them all
        connection.execute(text("UPDATE outbox_event SET published_at = CURRENT_TIMESTAMP"))

    def restaurants_in_state() -> set[int]:
        with UnitOfWork(app.engine) as uow:
            state = retained_state.read(uow)
        return {e["data"]["order"]["restaurant_id"] for e in state.orders} | {
            e["data"]["item"]["restaurant_id"] for e in state.items
        }

    bistro, cafe = chain["Bistro"]["rid"], chain["Cafe"]["rid"]
    assert restaurants_in_state() == {bistro, cafe}
    assert boss.post(f"/restaurants/{bistro}/archive").status_code == 200
    assert restaurants_in_state() == {cafe}


def test_nothing_can_be_added_to_an_archived_restaurant(app: App, chain):
    boss, bistro = chain["boss"], chain["Bistro"]["rid"]
    burger, _fries = add_burger_and_fries(chain["Bistro"]["admin"], bistro, stock=5, low_stock=0)
    assert boss.post(f"/restaurants/{bistro}/archive").status_code == 200
    before = state(app.engine, bistro)
    order = boss.post(f"/restaurants/{bistro}/orders", json={"items": [{"menu_item_id": burger["id"], "quantity": 1}]})
    assert order.status_code == 409 and "archived" in order.json()["detail"]  # a super_admin's token reaches it
    assert boss.get(f"/restaurants/{bistro}/inventory").json()["data"][0]["stock_quantity"] == 5
    device = boss.post(f"/restaurants/{bistro}/devices", json=PRINTER)
    assert device.status_code == 409 and "archived" in device.json()["detail"]
    person = boss.post(f"/restaurants/{bistro}/users", json={"email": "late@bistro.example", "name": "Late"})
    assert person.status_code == 409 and "archived" in person.json()["detail"]
    assert state(app.engine, bistro) == before


@pytest.mark.parametrize(
    ("who", "path", "code"),
    [
        ("Bistro", "/restaurants/{bistro}/archive", 403),  # an admin may not close their own restaurant
        ("Cafe", "/restaurants/{bistro}/archive", 403),  # nor another's
        ("boss", "/restaurants/999999/archive", 404),
        ("boss", "/restaurants/0/archive", 422),
        ("boss", "/restaurants/x/archive", 422),
        (None, "/restaurants/{bistro}/archive", 401),
    ],
)
def test_bad_archive_requests_are_refused_and_change_nothing(app: App, chain, who, path, code):
    bistro = chain["Bistro"]["rid"]
    caller = app.http() if who is None else chain[who] if who == "boss" else chain[who]["admin"]
    before = state(app.engine, bistro)
    answer = caller.post(path.format(bistro=bistro))
    assert answer.status_code == code, answer.text
    assert "detail" in answer.json()
    assert state(app.engine, bistro) == before
    assert [r["name"] for r in chain["boss"].get("/restaurants").json()["data"]] == ["Bistro", "Cafe"]


def test_archiving_on_both_databases_revokes_every_device_once_even_twice_at_once(db: Engine):
    """The service on SQLite and PostgreSQL, two archives of one restaurant at once: each device is revoked
    by one of them (one `device_updated` each), the restaurant is archived once, no error."""
    boss = Actor("super_admin", None)
    with UnitOfWork(db) as uow:
        rid = users.create_restaurant(uow, boss, NewRestaurantIn(name="Diner"))[0].id
        assert rid is not None
        for n in range(3):
            tablet = DeviceIn(id=f"tab-{n}", kind="tablet", name=f"tab-{n}")
            devices.create_device(uow, TokenService(b"k" * 32), rid, tablet)
        uow.commit()
    events_before = state(db, rid)[3]
    results: list[Any] = []

    def run() -> None:
        try:
            with UnitOfWork(db) as uow:
                results.append(archive.archive_restaurant(uow, boss, rid).devices_revoked)
                uow.commit()
        except Exception as exc:  # the test reads it below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 3], results
    archived_at, found, _people, events = state(db, rid)
    assert archived_at is not None and all(revoked for _id, revoked in found)
    assert events == events_before + 3  # one device_updated per device


def test_only_a_super_admin_archives_and_an_unknown_restaurant_is_not_found(db: Engine):
    with UnitOfWork(db) as uow:
        rid = users.create_restaurant(uow, Actor("super_admin", None), NewRestaurantIn(name="Diner"))[0].id
        uow.commit()
    assert rid is not None
    with UnitOfWork(db) as uow, pytest.raises(Forbidden):
        archive.archive_restaurant(uow, Actor("admin", rid), rid)
    with UnitOfWork(db) as uow, pytest.raises(DomainError, match="not found"):
        archive.archive_restaurant(uow, Actor("super_admin", None), 424242)
    assert state(db, rid)[0] is None
