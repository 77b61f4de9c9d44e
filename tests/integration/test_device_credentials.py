"""Device credentials through the real app: create, list, re-issue, revoke; the broker's denylist; audiences.

In-process (the denylist is read from the database the way the broker reads it), but for the one test
that connects to the broker."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from core.services.devices import DeviceDenylist, token_denylist
from tests.support import App, Site, Stack, Subscriber

NOT_AUTHORIZED = 135  # CONNACK 5 (not authorized) as paho reports it
GRILL_PRINTER = {"id": "printer-grill-1", "kind": "printer", "name": "Grill printer", "station": "grill"}


@pytest.fixture
def bistro(app: Site):
    """Restaurant A with a logged-in admin and a staff member; restaurant B's admin beside it (in-process)."""
    return make_bistro(app)


def make_bistro(app: Site) -> dict:
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    login = app.http().post("/auth/login", json={"email": "a@example.com", "password": "secret-pass"})
    assert login.status_code == 200, login.text
    return {
        "rid": rid,
        "other": other,
        "admin_token": login.json()["access_token"],
        "admin": app.http(login.json()["access_token"]),
        "staff": app.http(app.api_token("user-s", "staff", rid)),
        "other_admin": app.http(app.api_token("user-b", "admin", other)),
    }


def create(bistro, body: dict | None = None, rid: int | None = None) -> dict:
    response = bistro["admin"].post(f"/restaurants/{rid or bistro['rid']}/devices", json=body or GRILL_PRINTER)
    assert response.status_code == 201, response.text
    return response.json()


def events(app: Site, rid: int) -> list[dict]:
    client = app.http(app.api_token("reader", "admin", rid))
    return client.get(f"/restaurants/{rid}/events", params={"limit": 1000}).json()


def denylist(app: Site) -> DeviceDenylist:
    return token_denylist(app.engine)


def test_an_admin_creates_a_device_and_gets_its_broker_token_once(app: App, bistro):
    rid = bistro["rid"]
    before = time.time()
    response = bistro["admin"].post(f"/restaurants/{rid}/devices", json=GRILL_PRINTER)
    assert response.status_code == 201, response.text
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["client_id"] == "printer-grill-1"
    device = body["device"]
    assert device["id"] == "printer-grill-1"
    assert (device["kind"], device["name"], device["station"]) == ("printer", "Grill printer", "grill")
    assert (device["revoked"], device["revoked_at"], device["presence"]) == (False, None, "unknown")
    assert device["token_expires_at"] == body["expires_at"]

    claims = app.tokens.verify(body["token"], "mqtt")
    expected = ("printer-grill-1", "printer", rid, "grill")
    assert (claims["sub"], claims["role"], claims["rid"], claims["station"]) == expected
    assert claims["exp"] - before == pytest.approx(365 * 86_400, abs=5)
    assert datetime.fromisoformat(body["expires_at"]).timestamp() == claims["exp"]
    assert denylist(app).jti == {"printer-grill-1": claims["jti"]}
    assert not denylist(app).refuses(claims)

    listed = bistro["staff"].get(f"/restaurants/{rid}/devices")
    assert listed.status_code == 200
    assert listed.json() == {"data": [device], "count": 1}
    assert body["token"] not in listed.text
    assert claims["jti"] not in listed.text

    created = [e for e in events(app, rid) if e["type"] == "device_updated"]
    assert [e["data"]["action"] for e in created] == ["created"]
    assert created[0]["data"]["device"] == device
    assert body["token"] not in str(created)


def test_kinds_and_stations_and_ttl(app: App, bistro):
    tablet = create(bistro, {"id": "kds-1", "kind": "tablet", "name": "  Kitchen display  ", "ttl_days": 1})
    claims = app.tokens.verify(tablet["token"], "mqtt")
    assert tablet["device"]["name"] == "Kitchen display"
    assert (claims["role"], "station" in claims) == ("tablet", False)
    assert claims["exp"] - claims["iat"] == 86_400
    bar_tablet = create(bistro, {"id": "kds-bar", "kind": "tablet", "name": "Bar display", "station": "bar"})
    assert app.tokens.verify(bar_tablet["token"], "mqtt")["station"] == "bar"
    scale = create(bistro, {"id": "scale_patty", "kind": "scale", "name": "Patty scale", "ttl_days": 3650})
    assert app.tokens.verify(scale["token"], "mqtt")["role"] == "scale"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "Printer-1"}, "id"),
        ({"id": "-printer"}, "id"),
        ({"id": "printer 1"}, "id"),
        ({"id": "printer:1"}, "id"),
        ({"id": "p" * 65}, "id"),
        ({"id": ""}, "id"),
        ({"id": "user-1"}, "id"),  # a dashboard user's client id
        ({"id": "orderbus-relay"}, "id"),  # the bus's client id
        ({"kind": "fryer"}, "kind"),
        ({"kind": "admin"}, "kind"),
        ({"station": None}, None),  # a printer without a station
        ({"station": "Grill!"}, "station"),
        ({"kind": "scale"}, None),  # a scale with a station
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 81}, "name"),
        ({"ttl_days": 0}, "ttl_days"),
        ({"ttl_days": 3651}, "ttl_days"),
        ({"ttl_days": "soon"}, "ttl_days"),
        ({"token_jti": "mine"}, "token_jti"),
    ],
)
def test_bad_devices_get_422_and_write_nothing(app: App, bistro, change, field):
    rid = bistro["rid"]
    before = events(app, rid)
    response = bistro["admin"].post(f"/restaurants/{rid}/devices", json={**GRILL_PRINTER, **change})
    assert response.status_code == 422, response.text
    if field is not None:
        assert any(field in [str(part) for part in error["loc"]] for error in response.json()["detail"])
    assert bistro["admin"].get(f"/restaurants/{rid}/devices").json() == {"data": [], "count": 0}
    assert events(app, rid) == before


@pytest.mark.parametrize("missing", ["id", "kind", "name"])
def test_required_fields(app: App, bistro, missing):
    body = {key: value for key, value in GRILL_PRINTER.items() if key != missing}
    assert bistro["admin"].post(f"/restaurants/{bistro['rid']}/devices", json=body).status_code == 422


def test_a_device_id_is_unique_across_restaurants(app: App, bistro):
    rid, other = bistro["rid"], bistro["other"]
    first = create(bistro)
    before = events(app, rid)
    again = bistro["admin"].post(f"/restaurants/{rid}/devices", json={**GRILL_PRINTER, "name": "Another"})
    assert again.status_code == 409
    assert "printer-grill-1 is already taken" in again.json()["detail"]
    elsewhere = bistro["other_admin"].post(f"/restaurants/{other}/devices", json=GRILL_PRINTER)
    assert elsewhere.status_code == 409
    assert "restaurant" not in elsewhere.json()["detail"]  # says nothing about whose it is
    assert bistro["admin"].get(f"/restaurants/{rid}/devices").json()["data"] == [first["device"]]
    assert bistro["other_admin"].get(f"/restaurants/{other}/devices").json()["data"] == []
    assert events(app, rid) == before
    assert events(app, other) == []
    # the first token is still the one the broker accepts
    assert denylist(app).jti == {"printer-grill-1": app.tokens.verify(first["token"], "mqtt")["jti"]}


def test_only_an_admin_of_the_restaurant_manages_credentials(app: App, bistro):
    rid, staff, other_admin = bistro["rid"], bistro["staff"], bistro["other_admin"]
    create(bistro)
    before = events(app, rid)
    path = f"/restaurants/{rid}/devices"
    assert staff.post(path, json={**GRILL_PRINTER, "id": "p2"}).status_code == 403
    assert staff.post(f"{path}/printer-grill-1/token").status_code == 403
    assert staff.delete(f"{path}/printer-grill-1").status_code == 403
    assert other_admin.get(path).status_code == 403
    assert other_admin.post(path, json={**GRILL_PRINTER, "id": "p2"}).status_code == 403
    assert other_admin.post(f"{path}/printer-grill-1/token").status_code == 403
    assert other_admin.delete(f"{path}/printer-grill-1").status_code == 403
    # B's admin naming A's device under B's own restaurant: not found
    other_path = f"/restaurants/{bistro['other']}/devices/printer-grill-1"
    assert other_admin.delete(other_path).status_code == 404
    assert other_admin.post(f"{other_path}/token").status_code == 404
    assert app.http().get(path).status_code == 401
    root = app.http(app.api_token("root", "super_admin", None))
    assert root.post("/restaurants/999/devices", json={**GRILL_PRINTER, "id": "p2"}).status_code == 404
    assert events(app, rid) == before
    assert denylist(app).revoked == frozenset()


def test_revoking_refuses_that_devices_tokens_only(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    printer = app.tokens.verify(create(bistro)["token"], "mqtt")
    scale = app.tokens.verify(create(bistro, {"id": "scale-1", "kind": "scale", "name": "S"})["token"], "mqtt")
    response = admin.delete(f"/restaurants/{rid}/devices/printer-grill-1")
    assert response.status_code == 204
    assert response.content == b""
    listed = {d["id"]: d for d in admin.get(f"/restaurants/{rid}/devices").json()["data"]}
    assert listed["printer-grill-1"]["revoked"] is True
    revoked_at = listed["printer-grill-1"]["revoked_at"]
    assert revoked_at is not None
    assert listed["scale-1"]["revoked"] is False

    deny = denylist(app)
    assert deny.revoked == {"printer-grill-1"}
    assert deny.refuses(printer)
    assert not deny.refuses(scale)
    # a token minted elsewhere (the CLI) for the revoked device is refused too; a dashboard is not a device
    assert deny.refuses({**printer, "jti": "minted-by-cli"})
    assert not deny.refuses({"sub": "printer-grill-1", "role": "admin", "rid": rid, "jti": "x"})
    # devices the API never registered are not refused
    assert not deny.refuses({"sub": "printer-unregistered", "role": "printer", "rid": rid, "jti": "x"})

    assert admin.delete(f"/restaurants/{rid}/devices/printer-grill-1").status_code == 204  # again: fine
    again = {d["id"]: d for d in admin.get(f"/restaurants/{rid}/devices").json()["data"]}
    assert again["printer-grill-1"]["revoked_at"] == revoked_at
    actions = [e["data"]["action"] for e in events(app, rid) if e["type"] == "device_updated"]
    assert actions == ["created", "created", "revoked"]

    assert admin.delete(f"/restaurants/{rid}/devices/nobody").status_code == 404
    reissue = admin.post(f"/restaurants/{rid}/devices/printer-grill-1/token")
    assert reissue.status_code == 409
    assert "revoked" in reissue.json()["detail"]
    assert denylist(app).refuses(printer)
    # and the id stays taken
    assert admin.post(f"/restaurants/{rid}/devices", json=GRILL_PRINTER).status_code == 409


def test_reissuing_replaces_the_token(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    first = create(bistro)
    old = app.tokens.verify(first["token"], "mqtt")
    response = admin.post(f"/restaurants/{rid}/devices/printer-grill-1/token", json={"ttl_days": 7})
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    new = app.tokens.verify(body["token"], "mqtt")
    assert (new["sub"], new["role"], new["rid"], new["station"]) == ("printer-grill-1", "printer", rid, "grill")
    assert new["jti"] != old["jti"]
    assert new["exp"] - new["iat"] == 7 * 86_400
    assert body["device"]["token_expires_at"] == body["expires_at"] != first["expires_at"]
    deny = denylist(app)
    assert deny.refuses(old)
    assert not deny.refuses(new)

    no_body = admin.post(f"/restaurants/{rid}/devices/printer-grill-1/token")  # the default lifetime
    assert no_body.status_code == 200
    newest = app.tokens.verify(no_body.json()["token"], "mqtt")
    assert newest["exp"] - newest["iat"] == 365 * 86_400
    assert denylist(app).refuses(new)
    assert admin.post(f"/restaurants/{rid}/devices/printer-grill-1/token", json={"ttl_days": 0}).status_code == 422
    assert admin.post(f"/restaurants/{rid}/devices/nobody/token").status_code == 404
    actions = [e["data"]["action"] for e in events(app, rid) if e["type"] == "device_updated"]
    assert actions == ["created", "token_reissued", "token_reissued"]


def test_the_api_refuses_device_tokens(app: App, bistro):
    rid = bistro["rid"]
    device_token = create(bistro)["token"]
    device = app.http(device_token)
    assert device.get(f"/restaurants/{rid}/devices").status_code == 401
    assert device.get("/auth/me").status_code == 401
    assert device.post(f"/restaurants/{rid}/devices", json={**GRILL_PRINTER, "id": "p2"}).status_code == 401


def test_the_broker_refuses_api_tokens_and_accepts_the_device_token(stack: Stack, subscribers):
    """The one test here that needs the broker: the full stack, its own bistro."""
    bistro = make_bistro(stack)

    def connect(client_id: str, token: str) -> int:
        subscriber = Subscriber(stack.settings.mqtt_port, client_id, token)
        subscribers.append(subscriber)
        return subscriber.connect()

    device_token = create(bistro)["token"]
    assert connect("user-1", bistro["admin_token"]) == NOT_AUTHORIZED  # the admin's API login token
    api_token_for_device = stack.tokens.issue(
        sub="printer-grill-1", role="printer", rid=bistro["rid"], audience="api", ttl_seconds=600
    )
    assert connect("printer-grill-1", api_token_for_device) == NOT_AUTHORIZED
    assert connect("someone-else", device_token) == NOT_AUTHORIZED  # the client id is the device id
    assert connect("printer-grill-1", device_token) == 0
