"""core.services.users: who may add, list and remove whom, on a real SQLite file and on PostgreSQL.

Every refused call is followed by a look at the database from a fresh unit of work: a refusal
changes nothing. Passwords are hashed for real (argon2, about half a second each), so each test
makes only the users it is about.
"""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import Engine, func, text
from sqlmodel import select

from core.commands import AdminIn, NewRestaurantIn, PasswordChangeIn, UserIn, UserRole
from core.domain import DomainError, Forbidden, NotFound, WrongPassword
from core.models import Restaurant, User
from core.paging import Window
from core.services import users
from core.services.users import Actor
from core.unit_of_work import UnitOfWork
from tests.support import wait_for

OPERATOR = Actor("super_admin", None)


def restaurant_with_admin(engine: Engine, name: str, email: str) -> tuple[int, users.Invited]:
    with UnitOfWork(engine) as uow:
        restaurant, admin = users.create_restaurant(
            uow, OPERATOR, NewRestaurantIn(name=name, admin=AdminIn(email=email, name=f"{name} admin"))
        )
        uow.commit()
    assert restaurant.id is not None and admin is not None
    return restaurant.id, admin


def invite(engine: Engine, actor: Actor, rid: int, email: str, role: UserRole = "staff") -> users.Invited:
    with UnitOfWork(engine) as uow:
        invited = users.invite(uow, actor, rid, UserIn(email=email, name=email.split("@")[0], role=role))
        uow.commit()
    return invited


def as_actor(user: User) -> Actor:
    return Actor(user.role, user.restaurant_id, user.id)


def emails(engine: Engine) -> list[str]:
    with UnitOfWork(engine) as uow:
        return sorted(user.email for user in uow.session.exec(select(User)))


def login(engine: Engine, email: str, password: str) -> int | None:
    """The id of the user these credentials log in, or None."""
    with UnitOfWork(engine) as uow:
        user = users.authenticate(uow, email, password)
        return None if user is None else user.id


def test_a_super_admin_logs_in_and_adds_a_restaurant_with_its_admin_in_one_go(db: Engine):
    with UnitOfWork(db) as uow:
        boss = users.create_super_admin(uow, "Boss@Chain.example", "Boss", "correct horse")
        uow.commit()
    assert boss.restaurant_id is None and boss.role == "super_admin" and boss.email == "boss@chain.example"
    assert login(db, "BOSS@chain.example", "correct horse") is not None
    assert login(db, "boss@chain.example", "wrong horse") is None

    rid, admin = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    assert admin.user.role == "admin" and admin.user.restaurant_id == rid and len(admin.password) >= 16
    assert login(db, "ann@bistro.example", admin.password) == admin.user.id
    with UnitOfWork(db) as uow:  # only the hash is kept
        stored = uow.session.get(User, admin.user.id)
        assert stored is not None and admin.password not in stored.password_hash


def test_a_restaurant_whose_admin_email_is_taken_is_not_created(db: Engine):
    restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    with UnitOfWork(db) as uow, pytest.raises(DomainError, match="exists already"):
        users.create_restaurant(
            uow, OPERATOR, NewRestaurantIn(name="Second", admin=AdminIn(email="ANN@bistro.example", name="Ann"))
        )
    with UnitOfWork(db) as uow:
        assert [r.name for r in uow.session.exec(select(Restaurant))] == ["Bistro"]


@pytest.mark.parametrize("role", ["admin", "staff"])
def test_only_a_super_admin_adds_restaurants(db: Engine, role: str):
    rid, _ = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    with UnitOfWork(db) as uow, pytest.raises(Forbidden):
        users.create_restaurant(uow, Actor(role, rid, 1), NewRestaurantIn(name="Mine"))
    with UnitOfWork(db) as uow:
        assert uow.session.exec(select(func.count()).select_from(Restaurant)).one() == 1


def test_an_admin_invites_staff_and_admins_of_their_own_restaurant_only(db: Engine):
    rid, ann = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    other, bob = restaurant_with_admin(db, "Cafe", "bob@cafe.example")
    cook = invite(db, as_actor(ann.user), rid, "cook@bistro.example")
    assert cook.user.role == "staff" and cook.user.restaurant_id == rid
    assert login(db, "cook@bistro.example", cook.password) is not None
    second = invite(db, as_actor(ann.user), rid, "sam@bistro.example", role="admin")
    assert second.user.role == "admin"
    before = emails(db)

    with pytest.raises(Forbidden, match="staff may not"):  # staff invite no one
        invite(db, as_actor(cook.user), rid, "friend@bistro.example")
    with pytest.raises(Forbidden, match="not your restaurant"):  # nobody invites into another restaurant
        invite(db, as_actor(bob.user), rid, "spy@cafe.example", role="admin")
    with pytest.raises(DomainError, match="exists already"):
        invite(db, as_actor(ann.user), rid, "BOB@cafe.example")
    with pytest.raises(NotFound):
        invite(db, OPERATOR, 999_999, "ghost@nowhere.example")
    assert emails(db) == before
    assert invite(db, OPERATOR, other, "op-made@cafe.example").user.restaurant_id == other  # the operator may


def test_users_are_listed_per_restaurant_to_its_own_people(db: Engine):
    rid, ann = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    _, bob = restaurant_with_admin(db, "Cafe", "bob@cafe.example")
    cook = invite(db, as_actor(ann.user), rid, "cook@bistro.example")
    with UnitOfWork(db) as uow:
        assert [u.email for u in users.list_users(uow, as_actor(cook.user), rid).rows] == [
            "ann@bistro.example",
            "cook@bistro.example",
        ]
        assert users.list_users(uow, OPERATOR, rid, Window(skip=1, limit=5)).count == 2
        assert [u.email for u in users.list_users(uow, OPERATOR, rid, Window(skip=1, limit=5)).rows] == [
            "cook@bistro.example"
        ]
        with pytest.raises(Forbidden):
            users.list_users(uow, as_actor(bob.user), rid)
        with pytest.raises(Forbidden):  # a device's role sees no users, even of its own restaurant
            users.list_users(uow, Actor("printer", rid), rid)


def test_removing_users_keeps_an_admin_and_never_removes_yourself(db: Engine):
    rid, ann = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    _, bob = restaurant_with_admin(db, "Cafe", "bob@cafe.example")
    cook = invite(db, as_actor(ann.user), rid, "cook@bistro.example")
    before = emails(db)

    def remove(actor: Actor, target: int, where: int = rid) -> None:
        with UnitOfWork(db) as uow:
            users.remove(uow, actor, where, target)
            uow.commit()

    assert ann.user.id is not None and cook.user.id is not None and bob.user.id is not None
    with pytest.raises(DomainError, match="yourself"):
        remove(as_actor(ann.user), ann.user.id)
    with pytest.raises(DomainError, match="at least one admin"):  # the operator may not empty it either
        remove(OPERATOR, ann.user.id)
    with pytest.raises(Forbidden):  # staff remove no one
        remove(as_actor(cook.user), ann.user.id)
    with pytest.raises(Forbidden):  # another restaurant's admin, on its path
        remove(as_actor(bob.user), cook.user.id)
    with pytest.raises(NotFound):  # another restaurant's user, on one's own path
        remove(as_actor(ann.user), bob.user.id)
    with pytest.raises(NotFound):
        remove(as_actor(ann.user), 999_999)
    assert emails(db) == before

    remove(as_actor(ann.user), cook.user.id)
    assert login(db, "cook@bistro.example", cook.password) is None
    second = invite(db, as_actor(ann.user), rid, "sam@bistro.example", role="admin")
    remove(as_actor(second.user), ann.user.id)  # two admins: one may go
    assert emails(db) == ["bob@cafe.example", "sam@bistro.example"]


def test_a_user_changes_their_own_password_with_the_current_one(db: Engine):
    _, ann = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    actor = as_actor(ann.user)

    def change(current: str, new: str) -> None:
        with UnitOfWork(db) as uow:
            users.change_password(uow, actor, PasswordChangeIn(current_password=current, new_password=new))
            uow.commit()

    with pytest.raises(WrongPassword):
        change("not it at all", "a brand new one")
    with pytest.raises(DomainError, match="is the current one"):
        change(ann.password, ann.password)
    assert login(db, "ann@bistro.example", ann.password) is not None  # unchanged by the refusals

    change(ann.password, "a brand new one")
    assert login(db, "ann@bistro.example", ann.password) is None
    assert login(db, "ann@bistro.example", "a brand new one") is not None
    with UnitOfWork(db) as uow, pytest.raises(NotFound):  # an operator's CLI token has no account
        users.get_self(uow, OPERATOR)


def test_the_actor_of_a_token_is_a_user_only_with_a_logins_uid():
    assert Actor.from_claims({"sub": "user-12", "role": "admin", "rid": 3, "uid": 12}) == Actor("admin", 3, 12)
    assert Actor.from_claims({"sub": "operator", "role": "super_admin", "rid": None}).user_id is None
    assert Actor.from_claims({"sub": "user-12", "role": "staff", "rid": 3}).user_id is None  # no uid: the CLI's
    assert Actor.from_claims({"sub": "x", "role": "staff", "rid": 3, "uid": "12"}).user_id is None


def test_two_admins_removing_each_other_at_once_leave_one_admin(db: Engine):
    """The last-admin check reads under the restaurant's lock: the second removal waits for the first to
    commit, then sees one admin left and is refused. Without the lock, PostgreSQL let both pass."""
    rid, ann = restaurant_with_admin(db, "Bistro", "ann@bistro.example")
    sam = invite(db, as_actor(ann.user), rid, "sam@bistro.example", role="admin")
    assert ann.user.id is not None and sam.user.id is not None
    outcome: list[BaseException | None] = []

    def sam_removes_ann() -> None:
        try:
            with UnitOfWork(db) as uow:
                users.remove(uow, as_actor(sam.user), rid, ann.user.id)  # type: ignore[arg-type]
                uow.commit()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    with UnitOfWork(db) as first:
        users.remove(first, as_actor(ann.user), rid, sam.user.id)  # holds the restaurant's lock, uncommitted
        second = threading.Thread(target=sam_removes_ann)
        second.start()
        wait_for(lambda: waiting_for_a_lock(db))
        first.commit()
    second.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], DomainError), outcome
    assert "at least one admin" in str(outcome[0])
    assert emails(db) == ["ann@bistro.example"]


def waiting_for_a_lock(engine: Engine) -> bool:
    """Another transaction is blocked on a lock: a row lock on PostgreSQL, the writer's turn on SQLite
    (seen as its BEGIN IMMEDIATE not having returned, i.e. a second connection checked out)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            return bool(connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar())
    return engine.pool.checkedout() >= 2  # type: ignore[attr-defined]


def test_the_demo_credentials_file_appears_once_its_admin_can_log_in(engine: Engine, tmp_path):
    """A script polls for demo-credentials.json, then logs in: the file must not come before the admin."""
    from core.demo import CREDENTIALS_FILE, DEMO_EMAIL, ensure_demo

    path = tmp_path / CREDENTIALS_FILE
    first = ensure_demo(engine, tmp_path)
    assert json.loads(path.read_text())["password"] == first.password
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert login(engine, DEMO_EMAIL, first.password) is not None
    assert ensure_demo(engine, tmp_path).password == first.password  # kept

    path.unlink()  # lost after the seeding (a crash before it was written): the admin gets a new one
    second = ensure_demo(engine, tmp_path)
    assert second.password != first.password and json.loads(path.read_text())["password"] == second.password
    assert login(engine, DEMO_EMAIL, second.password) is not None
    assert login(engine, DEMO_EMAIL, first.password) is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
