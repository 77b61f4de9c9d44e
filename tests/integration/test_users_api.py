"""Accounts through the REST app in-process: the super_admin's login, restaurants with their first admin,
invitations and removals, password changes, the failed-login limit and CORS.

Every account here is made the way a real one is (the service for the CLI's super_admin, HTTP for
the rest) and every login goes through `/auth/login` with real argon2 hashes.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import Engine, func
from sqlmodel import select

from config.settings import Settings
from core.models import Restaurant
from core.services import users
from core.unit_of_work import UnitOfWork
from tests.integration.accounts import BOSS, BOSS_PASSWORD, login, make_super_admin, user_rows
from tests.support import App


def logins(outcome: str) -> float:
    return REGISTRY.get_sample_value("orderbus_logins_total", {"outcome": outcome}) or 0.0


def test_a_super_admin_logs_in_sees_every_restaurant_and_has_an_account(app: App, chain):
    boss = chain["boss"]
    me = boss.get("/users/me").json()
    assert me["email"] == BOSS and me["role"] == "super_admin" and me["restaurant_id"] is None
    assert [r["name"] for r in boss.get("/restaurants").json()["data"]] == ["Bistro", "Cafe"]
    bistro = chain["Bistro"]["rid"]
    assert boss.get(f"/restaurants/{bistro}/dashboard").status_code == 200  # picks any restaurant
    answer = app.http().post("/auth/login", json={"email": BOSS, "password": BOSS_PASSWORD})
    assert answer.json()["role"] == "super_admin" and answer.json()["restaurant_id"] is None


def test_an_admin_invites_staff_who_log_in_and_change_their_password(app: App, chain):
    rid, ann = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    answer = ann.post(f"/restaurants/{rid}/users", json={"email": "Cook@Bistro.example", "name": "Cook"})
    assert answer.status_code == 201 and answer.headers["cache-control"] == "no-store"
    cook = answer.json()
    assert cook["email"] == "cook@bistro.example" and cook["role"] == "staff" and cook["restaurant_id"] == rid
    staff = login(app, "cook@bistro.example", cook["password"])
    assert staff.get("/users/me").json()["id"] == cook["id"]
    assert [u["email"] for u in staff.get(f"/restaurants/{rid}/users").json()["data"]] == [
        "ann@bistro.example",
        "cook@bistro.example",
    ]
    assert "password" not in staff.get(f"/restaurants/{rid}/users").json()["data"][0]
    assert staff.get(f"/restaurants/{rid}/orders").status_code == 200  # works as staff at once

    wrong = staff.post("/users/me/password", json={"current_password": "nope", "new_password": "my own secret"})
    assert wrong.status_code == 400 and "current password" in wrong.json()["detail"]
    changed = staff.post("/users/me/password", json={"current_password": cook["password"], "new_password": "my own"})
    assert changed.status_code == 422  # under 8 characters
    changed = staff.post(
        "/users/me/password", json={"current_password": cook["password"], "new_password": "my own secret"}
    )
    assert changed.status_code == 204
    ended = staff.get("/users/me")  # every session from before the change ends, this one too
    assert ended.status_code == 401 and "log in again" in ended.json()["detail"]
    assert (
        app.http().post("/auth/login", json={"email": "cook@bistro.example", "password": cook["password"]}).status_code
        == 401
    )
    login(app, "cook@bistro.example", "my own secret")


def test_staff_inviting_anyone_is_refused_and_changes_nothing(app: App, chain):
    rid, ann = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    cook = ann.post(f"/restaurants/{rid}/users", json={"email": "cook@bistro.example", "name": "Cook"}).json()
    staff = login(app, "cook@bistro.example", cook["password"])
    before = user_rows(app.engine)
    for role in ("admin", "staff"):
        refused = staff.post(
            f"/restaurants/{rid}/users", json={"email": "pal@bistro.example", "name": "Pal", "role": role}
        )
        assert refused.status_code == 403 and "staff may not" in refused.json()["detail"]
    assert staff.delete(f"/restaurants/{rid}/users/{chain['Bistro']['id']}").status_code == 403
    assert user_rows(app.engine) == before


def test_another_restaurants_users_are_out_of_reach(app: App, chain):
    bistro, cafe = chain["Bistro"], chain["Cafe"]
    bob = cafe["admin"]
    before = user_rows(app.engine)
    assert bob.get(f"/restaurants/{bistro['rid']}/users").status_code == 403
    invited = bob.post(
        f"/restaurants/{bistro['rid']}/users", json={"email": "spy@x.example", "name": "Spy", "role": "admin"}
    )
    assert invited.status_code == 403 and invited.json()["detail"] == "not your restaurant"
    assert bob.delete(f"/restaurants/{bistro['rid']}/users/{bistro['id']}").status_code == 403
    # Ann's id on Bob's own path: no such user in his restaurant
    assert bob.delete(f"/restaurants/{cafe['rid']}/users/{bistro['id']}").status_code == 404
    assert user_rows(app.engine) == before


def test_removal_keeps_an_admin_and_refuses_yourself(app: App, chain):
    rid, ann, ann_id = chain["Bistro"]["rid"], chain["Bistro"]["admin"], chain["Bistro"]["id"]
    yourself = ann.delete(f"/restaurants/{rid}/users/{ann_id}")
    assert yourself.status_code == 409 and "yourself" in yourself.json()["detail"]
    last = chain["boss"].delete(f"/restaurants/{rid}/users/{ann_id}")
    assert last.status_code == 409 and "at least one admin" in last.json()["detail"]
    assert ann.delete(f"/restaurants/{rid}/users/999999").status_code == 404

    sam = ann.post(f"/restaurants/{rid}/users", json={"email": "sam@bistro.example", "name": "Sam", "role": "admin"})
    assert sam.status_code == 201 and sam.json()["role"] == "admin"
    sam_session = login(app, "sam@bistro.example", sam.json()["password"])
    assert sam_session.get(f"/restaurants/{rid}/users").status_code == 200
    assert ann.delete(f"/restaurants/{rid}/users/{sam.json()['id']}").status_code == 204
    for ended in (sam_session.get(f"/restaurants/{rid}/users"), sam_session.post("/auth/mqtt-token")):
        assert ended.status_code == 401  # a removed user's session ends at once, not at its expiry
    assert "sam@bistro.example" not in [row[0] for row in user_rows(app.engine)]
    gone = app.http().post("/auth/login", json={"email": "sam@bistro.example", "password": sam.json()["password"]})
    assert gone.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "name": "X"},
        {"email": "x@bistro.example", "name": ""},
        {"email": "x@bistro.example", "name": "X", "role": "super_admin"},
        {"email": "x@bistro.example", "name": "X", "role": "printer"},
        {"email": "x@bistro.example", "name": "X", "password": "chosen by me"},
        {"email": "x@bistro.example", "name": "X\nY"},
        {"email": 7, "name": "X"},
    ],
)
def test_bad_invitations_are_422_and_add_nobody(app: App, chain, body):
    rid, ann = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    before = user_rows(app.engine)
    assert ann.post(f"/restaurants/{rid}/users", json=body).status_code == 422
    assert user_rows(app.engine) == before


def test_a_taken_email_is_409_and_no_restaurant_is_made(app: App, chain):
    boss = chain["boss"]
    with UnitOfWork(app.engine) as uow:
        restaurants_before = uow.session.exec(select(func.count()).select_from(Restaurant)).one()
    taken = boss.post("/restaurants", json={"name": "Third", "admin": {"email": "ANN@bistro.example", "name": "Ann"}})
    assert taken.status_code == 409 and "exists already" in taken.json()["detail"]
    with UnitOfWork(app.engine) as uow:
        assert uow.session.exec(select(func.count()).select_from(Restaurant)).one() == restaurants_before
    rid = chain["Cafe"]["rid"]
    again = chain["Cafe"]["admin"].post(f"/restaurants/{rid}/users", json={"email": BOSS, "name": "Boss again"})
    assert again.status_code == 409
    assert chain["Bistro"]["admin"].post("/restaurants", json={"name": "Mine"}).status_code == 403


def test_an_operator_token_has_no_account_but_a_user_token_does(app: App, chain):
    operator = app.http(app.api_token("operator", "super_admin", None))  # `orderbus token --audience api`
    assert operator.get("/users/me").status_code == 404
    change = {"current_password": "whatever", "new_password": "whatever else"}
    assert operator.post("/users/me/password", json=change).status_code == 404
    assert app.http().get("/users/me").status_code == 401


# --- the failed-login limit ------------------------------------------------------------------------


def limited_app(tmp_path, engine: Engine, **limits: Any) -> App:
    return App(Settings(data_dir=tmp_path / "data", **limits), engine)


def test_wrong_passwords_until_429_with_retry_after_even_for_the_right_one(tmp_path, engine: Engine):
    make_super_admin(engine)
    app = limited_app(tmp_path, engine, login_failures_per_account=3, login_failure_window_seconds=600)
    anonymous = app.http()
    failures, limited = logins("failure"), logins("limited_account")
    for _ in range(3):
        assert anonymous.post("/auth/login", json={"email": BOSS, "password": "guess"}).status_code == 401
    refused = anonymous.post("/auth/login", json={"email": BOSS.upper(), "password": BOSS_PASSWORD})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 600
    assert "too many failed logins for this account" in refused.json()["detail"]
    assert logins("failure") == failures + 3 and logins("limited_account") == limited + 1
    # nobody else is slowed down by it: the address is under its own limit
    with UnitOfWork(engine) as uow:
        users.create_super_admin(uow, "other@chain.example", "Other", "other password")
        uow.commit()
    assert (
        anonymous.post("/auth/login", json={"email": "other@chain.example", "password": "other password"}).status_code
        == 200
    )


def test_one_address_trying_many_accounts_is_limited(tmp_path, engine: Engine):
    make_super_admin(engine)
    app = limited_app(tmp_path, engine, login_failures_per_account=10, login_failures_per_address=3)
    anonymous = app.http()
    limited = logins("limited_address")
    for n in range(3):
        assert anonymous.post("/auth/login", json={"email": f"u{n}@x.example", "password": "guess"}).status_code == 401
    refused = anonymous.post("/auth/login", json={"email": BOSS, "password": BOSS_PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "this address" in refused.json()["detail"]
    assert logins("limited_address") == limited + 1


def test_a_success_clears_the_accounts_failures(tmp_path, engine: Engine):
    make_super_admin(engine)
    app = limited_app(tmp_path, engine, login_failures_per_account=3)
    anonymous = app.http()
    for _ in range(2):
        assert anonymous.post("/auth/login", json={"email": BOSS, "password": "typo"}).status_code == 401
    assert anonymous.post("/auth/login", json={"email": BOSS, "password": BOSS_PASSWORD}).status_code == 200
    for _ in range(2):  # two more typos: counted from zero again
        assert anonymous.post("/auth/login", json={"email": BOSS, "password": "typo"}).status_code == 401
    assert anonymous.post("/auth/login", json={"email": BOSS, "password": BOSS_PASSWORD}).status_code == 200


# --- CORS ------------------------------------------------------------------------------------------

PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "content-type,authorization"}


def test_cors_is_off_by_default(app: App):
    http = app.http()
    origin = {"origin": "https://admin.example.com"}
    assert http.options("/auth/login", headers=origin | PREFLIGHT).status_code == 405
    answer = http.get("/config", headers=origin)
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_cors_origins_answer_preflights_for_those_origins_only(tmp_path, engine: Engine):
    app = App(Settings(data_dir=tmp_path / "data", cors_origins=["https://admin.example.com"]), engine)
    http = app.http()
    allowed = http.options("/auth/login", headers={"origin": "https://admin.example.com"} | PREFLIGHT)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://admin.example.com"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = http.options("/auth/login", headers={"origin": "https://evil.example"} | PREFLIGHT)
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = http.get("/config", headers={"origin": "https://admin.example.com"})
    assert simple.headers["access-control-allow-origin"] == "https://admin.example.com"
    assert "access-control-allow-origin" not in http.get("/config", headers={"origin": "https://evil.example"}).headers


def test_a_restaurant_has_a_currency_eur_unless_given_and_the_dashboard_says_it(app: App, chain):
    boss = chain["boss"]
    made = boss.post("/restaurants", json={"name": "Diner", "currency": "USD"})
    assert made.status_code == 201 and made.json()["currency"] == "USD", made.text
    assert boss.get(f"/restaurants/{made.json()['id']}/dashboard").json()["restaurant_currency"] == "USD"
    bistro = chain["Bistro"]["rid"]
    assert {r["name"]: r["currency"] for r in boss.get("/restaurants").json()["data"]}["Bistro"] == "EUR"
    assert boss.get(f"/restaurants/{bistro}/dashboard").json()["restaurant_currency"] == "EUR"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Third", "admin": {"email": "not-an-email", "name": "Ann"}},
        {"name": "Third", "admin": {"email": "x@third.example"}},
        {"name": "Third", "admin": {"email": "x@third.example", "name": "Ann", "role": "super_admin"}},
        {"name": "Third", "admin": "x@third.example"},
        {"name": "", "admin": {"email": "x@third.example", "name": "Ann"}},
        {"name": "Third", "currency": "eur"},
        {"name": "Third", "currency": "EURO"},
        {"name": "Third", "currency": ""},
        {"name": "Third", "currency": 978},
    ],
)
def test_bad_restaurants_with_an_admin_are_422_and_make_nothing(app: App, chain, body):
    before = user_rows(app.engine)
    with UnitOfWork(app.engine) as uow:
        restaurants_before = uow.session.exec(select(func.count()).select_from(Restaurant)).one()
    assert chain["boss"].post("/restaurants", json=body).status_code == 422
    assert user_rows(app.engine) == before
    with UnitOfWork(app.engine) as uow:
        assert uow.session.exec(select(func.count()).select_from(Restaurant)).one() == restaurants_before


@pytest.mark.parametrize(
    "body",
    [
        {"new_password": "long enough one"},
        {"current_password": "", "new_password": "long enough one"},
        {"current_password": "x", "new_password": "y" * 201},
        {"current_password": "x", "new_password": "line\nbreak here"},
        {"current_password": "x", "new_password": 12345678},
        {"current_password": "x", "new_password": "long enough one", "email": "me@x.example"},
    ],
)
def test_bad_password_changes_are_422_and_the_password_stays(app: App, chain, body):
    ann = chain["Bistro"]["admin"]
    assert ann.post("/users/me/password", json=body).status_code == 422
    assert ann.get("/users/me").status_code == 200  # the session (and so the password) is unchanged


@pytest.mark.parametrize(
    ("given", "origins"),
    [
        (
            '["https://admin.example.com", "http://localhost:5173"]',
            ["https://admin.example.com", "http://localhost:5173"],
        ),
        ("https://admin.example.com, http://localhost:5173/", ["https://admin.example.com", "http://localhost:5173"]),
        ("", []),
    ],
)
def test_cors_origins_come_from_the_environment_as_a_list(tmp_path, monkeypatch, given: str, origins: list[str]):
    monkeypatch.setenv("ORDERBUS_CORS_ORIGINS", given)
    assert Settings(data_dir=tmp_path).cors_origins == origins


@pytest.mark.parametrize(
    "given", ["admin.example.com", "https://admin.example.com/app", '["https://x.example"', "ftp://x"]
)
def test_a_bad_cors_origin_is_refused_at_start_naming_it(tmp_path, monkeypatch, given: str):
    monkeypatch.setenv("ORDERBUS_CORS_ORIGINS", given)
    with pytest.raises(ValidationError, match="cors_origins"):
        Settings(data_dir=tmp_path)
