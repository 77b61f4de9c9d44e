"""`GET /api/v1/devices/me/status`: a device learns why the broker refuses its token (MQTT 3.1.1's CONNACK can't say).

In-process app, real SQLite: every reason a device can be refused for, and that a forged token learns nothing."""

from __future__ import annotations

import time

import jwt
from fastapi.testclient import TestClient

from core.tokens import ALGORITHM
from tests.support import App

STATUS = "/devices/me/status"
PRINTER = {"id": "printer-grill-1", "kind": "printer", "name": "Grill printer", "station": "grill"}


def setup(app: App) -> tuple[int, TestClient, str]:
    rid = app.add_restaurant("A", "a@example.com")
    admin = app.http(app.api_token("admin-a", "admin", rid))
    created = admin.post(f"/restaurants/{rid}/devices", json=PRINTER)
    assert created.status_code == 201, created.text
    return rid, admin, created.json()["token"]


def status(app: App, token: str | None):
    return app.http(token).get(STATUS)


def test_an_accepted_device_token_gets_its_state(app: App):
    rid, _admin, token = setup(app)
    answer = status(app, token)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["device_id"] == "printer-grill-1" and body["restaurant_id"] == rid and body["role"] == "printer"
    assert body["station"] == "grill" and body["registered"] is True and body["presence"] == "unknown"
    unregistered = status(app, app.mqtt_token("scale-free", "scale", rid))  # `orderbus token` for no record
    assert unregistered.status_code == 200 and unregistered.json()["registered"] is False


def test_a_revoked_device_learns_it_was_revoked_and_when(app: App):
    rid, admin, token = setup(app)
    assert admin.delete(f"/restaurants/{rid}/devices/printer-grill-1").status_code == 204
    answer = status(app, token)
    assert answer.status_code == 401
    assert answer.json()["reason"] == "revoked" and answer.json()["at"].endswith("Z")


def test_a_replaced_token_says_so_and_the_new_one_is_accepted(app: App):
    rid, admin, token = setup(app)
    reissued = admin.post(f"/restaurants/{rid}/devices/printer-grill-1/token")
    assert reissued.status_code == 200
    assert status(app, token).json()["reason"] == "replaced"
    assert status(app, reissued.json()["token"]).status_code == 200


def test_an_expired_token_says_expired_with_its_expiry(app: App):
    rid, _admin, _token = setup(app)
    now = int(time.time())
    claims = {"sub": "scale-1", "rid": rid, "role": "scale", "iat": now - 60, "nbf": now - 60, "exp": now - 30}
    expired = jwt.encode({**claims, "jti": "j", "aud": "mqtt"}, app.tokens.key, ALGORITHM)
    answer = status(app, expired)
    assert answer.status_code == 401 and answer.json()["reason"] == "expired"
    assert answer.json()["at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(now - 30)))


def test_revoked_beats_expired(app: App):
    """A new token would not help a revoked device: it hears `revoked`, even with an expired token."""
    rid, admin, token = setup(app)
    claims = app.tokens.verify(token, "mqtt")
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, app.tokens.key, ALGORITHM)
    assert admin.delete(f"/restaurants/{rid}/devices/printer-grill-1").status_code == 204
    assert status(app, expired).json()["reason"] == "revoked"


def test_wrong_roles_and_unknown_devices(app: App):
    rid, _admin, _token = setup(app)
    staff = status(app, app.mqtt_token("watcher", "staff", rid))
    assert staff.status_code == 403 and staff.json()["reason"] == "wrong_role"
    as_scale = status(app, app.mqtt_token("printer-grill-1", "scale", rid))  # the record says printer
    assert as_scale.status_code == 403 and as_scale.json()["reason"] == "wrong_role"
    elsewhere = status(app, app.mqtt_token("printer-grill-1", "printer", rid + 1, station="grill"))
    assert elsewhere.status_code == 404 and elsewhere.json()["reason"] == "unknown_device"


def test_bad_credentials_get_a_reason_and_learn_nothing_about_the_device(app: App):
    rid, admin, token = setup(app)
    assert admin.delete(f"/restaurants/{rid}/devices/printer-grill-1").status_code == 204
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), b"x" * 32, ALGORITHM)
    answers = {
        "missing_token": status(app, None),
        "bad_signature": status(app, forged),
        "wrong_audience": status(app, app.api_token("admin-a", "admin", rid)),
        "malformed": status(app, "not-a-token"),
    }
    for reason, answer in answers.items():
        assert answer.status_code == 401, (reason, answer.text)
        assert answer.json()["reason"] == reason
        assert "revoked" not in answer.text and "printer-grill-1" not in answer.text
