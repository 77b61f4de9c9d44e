"""Forged, stale and misused tokens at CONNECT: refused with CONNACK 5, counted by reason, logged,
and the broker keeps serving. Also a valid token used to take over someone else's client id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from broker.stats import DISCONNECTS
from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    ACCEPTED,
    NOT_AUTHORIZED,
    PINGRESP,
    assert_connect_refusal_counted,
    assert_counted,
    assert_logged,
    assert_still_serves,
    broker_log,
    connect_refusals,
    count,
    on_nats,
    opened,
    publish_as_service,
)
from tests.support import Subscriber

DROP = object()  # a claim value meaning "leave this claim out"


def claims(**changes: Any) -> dict[str, Any]:
    """Claims a restaurant-7 dashboard `dash` would carry, with changes."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "dash",
        "rid": 7,
        "role": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "a1b2c3",
        "aud": "mqtt",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not DROP}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(header: dict[str, Any], body: dict[str, Any]) -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode())


def unsigned(body: dict[str, Any], alg: str = "none") -> str:
    """`{"alg": "none"}` built by hand: PyJWT will not even encode one without being asked to."""
    return signing_input({"alg": alg, "typ": "JWT"}, body) + "."


def hmac_signed(body: dict[str, Any], secret: bytes, alg: str = "HS256") -> str:
    """HMAC-SHA256 by hand, with any secret (PyJWT refuses a PEM as an HMAC key, an attacker would not)."""
    message = signing_input({"alg": alg, "typ": "JWT"}, body)
    return message + "." + b64url(hmac.new(secret, message.encode(), hashlib.sha256).digest())


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh RSA key pair (private key file, public key PEM), made with openssl (no `cryptography` here)."""
    folder = tmp_path_factory.mktemp("rsa")
    private = folder / "private.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout"], check=True, capture_output=True).stdout
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    return private, public


def rs256_signed(body: dict[str, Any], private: Path) -> str:
    message = signing_input({"alg": "RS256", "typ": "JWT"}, body)
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private)], input=message.encode(), check=True, capture_output=True
    ).stdout
    return message + "." + b64url(signature)


def our_key(broker: Any, body: dict[str, Any]) -> str:
    """Signed with the broker's real key: the signature is fine, the claims are not."""
    return jwt.encode(body, broker.tokens.key, algorithm="HS256")


def tampered(broker: Any) -> str:
    """A valid staff token with its payload swapped for a super_admin one, signature kept."""
    header, _, signature = broker.token("dash", "staff").split(".")
    return f"{header}.{b64url(json.dumps(claims(role='super_admin', rid=DROP)).encode())}.{signature}"


Forge = Callable[[Any, tuple[Path, bytes]], str | None]

FORGED: list[tuple[str, Forge, str]] = [
    ("alg none", lambda b, k: unsigned(claims()), "malformed"),
    ("alg None", lambda b, k: unsigned(claims(), alg="None"), "malformed"),
    (
        "alg none, real signature kept",
        lambda b, k: unsigned(claims()) + b.token("dash", "admin").split(".")[2],
        "malformed",
    ),
    (
        "HS256 with the wrong key",
        lambda b, k: hmac_signed(claims(), b"not-the-broker-key-0123456789abcdef"),
        "bad_signature",
    ),
    ("HS256 keyed with an RSA public key", lambda b, k: hmac_signed(claims(), k[1]), "bad_signature"),
    ("RS256 with a fresh RSA key", lambda b, k: rs256_signed(claims(), k[0]), "malformed"),
    (
        "RS256 header, HMAC with the real key",
        lambda b, k: hmac_signed(claims(), b.tokens.key, alg="RS256"),
        "malformed",
    ),
    ("HS512 with the real key", lambda b, k: jwt.encode(claims(), b.tokens.key + b"x" * 40, "HS512"), "malformed"),
    ("payload swapped, signature kept", lambda b, k: tampered(b), "bad_signature"),
    ("expired a second ago", lambda b, k: our_key(b, claims(exp=int(time.time()) - 1)), "expired"),
    ("not valid for five minutes", lambda b, k: our_key(b, claims(nbf=int(time.time()) + 300)), "not_yet_valid"),
    ("issued in the future", lambda b, k: our_key(b, claims(iat=int(time.time()) + 300)), "not_yet_valid"),
    ("no sub", lambda b, k: our_key(b, claims(sub=DROP)), "missing_claim"),
    ("empty sub", lambda b, k: our_key(b, claims(sub="")), "missing_claim"),
    ("no role", lambda b, k: our_key(b, claims(role=DROP)), "missing_claim"),
    ("no exp", lambda b, k: our_key(b, claims(exp=DROP)), "missing_claim"),
    ("no iat", lambda b, k: our_key(b, claims(iat=DROP)), "missing_claim"),
    ("no jti", lambda b, k: our_key(b, claims(jti=DROP)), "missing_claim"),
    ("no aud", lambda b, k: our_key(b, claims(aud=DROP)), "missing_claim"),
    ("no rid for a dashboard", lambda b, k: our_key(b, claims(rid=DROP)), "missing_claim"),
    ("rid as a string", lambda b, k: our_key(b, claims(rid="7")), "missing_claim"),
    (
        "api audience",
        lambda b, k: b.tokens.issue(sub="dash", role="admin", rid=7, audience="api", ttl_seconds=60),
        "wrong_audience",
    ),
    ("audience list without mqtt", lambda b, k: our_key(b, claims(aud=["api", "web"])), "wrong_audience"),
    ("unknown role", lambda b, k: our_key(b, claims(role="root")), "unknown_role"),
    ("role as a list", lambda b, k: our_key(b, claims(role=["admin", "service"])), "unknown_role"),
    ("not a JWT", lambda b, k: "not-a-jwt", "malformed"),
    ("no password at all", lambda b, k: None, "no_token"),
]


@pytest.mark.parametrize(("forge", "reason"), [(f, r) for _, f, r in FORGED], ids=[name for name, _, _ in FORGED])
def test_a_bad_token_is_refused_counted_and_logged(broker, rsa_key, caplog, forge, reason):
    """Both engines: CONNACK 5 [MQTT-3.2.2-5: the server closes the connection after a non-zero CONNACK],
    counted and logged with the same reason (one `admit()` decides for both)."""
    token = forge(broker, rsa_key)
    before = connect_refusals(broker, reason)
    sock = opened(broker, raw.open_socket(broker.port))
    sock.sendall(raw.connect("dash", token, username="dash"))
    assert raw.connack_code(sock) == NOT_AUTHORIZED
    assert raw.closed_by_peer(sock, within=3.0)
    assert_connect_refusal_counted(broker, caplog, before, "dash", reason)
    assert_still_serves(broker)


def test_a_revoked_device_is_refused_at_connect(broker, caplog):
    broker.revoked.add("printer-1")
    before = connect_refusals(broker, "revoked")
    sock = opened(broker, raw.open_socket(broker.port))
    sock.sendall(raw.connect("printer-1", broker.token("printer-1", "printer", station="grill")))
    assert raw.connack_code(sock) == NOT_AUTHORIZED
    assert_connect_refusal_counted(broker, caplog, before, "printer-1", "revoked")
    assert_still_serves(broker)


@pytest.mark.parametrize(
    ("victim", "victim_sub", "victim_role", "attacker_sub", "attacker_client_id"),
    [
        ("kds-1", "kds-1", "tablet", "kds-2", "kds-1"),  # another device's valid token, the victim's client id
        ("kds-1", "kds-1", "tablet", "kds", "kds-1"),  # a subject that is a prefix of the victim's id
        ("kds-1", "kds-1", "tablet", "kds-2", "kds-1:x"),  # the victim's id with a suffix
        ("dash:tab-1", "dash", "admin", "dash-2", "dash:tab-1"),  # a browser tab's id, from another user
    ],
)
def test_a_valid_token_cannot_take_over_another_client_id(
    broker, caplog, victim, victim_sub, victim_role, attacker_sub, attacker_client_id
):
    owner = opened(broker, raw.open_socket(broker.port))
    owner.sendall(raw.connect(victim, broker.token(victim_sub, victim_role)))
    assert raw.connack_code(owner) == ACCEPTED
    owner.sendall(raw.subscribe(broker.topic("restaurant/7/orders"), qos=0))
    assert raw.expect_packet(owner)[0] == 9
    before = connect_refusals(broker, "client_id_mismatch")
    attacker = opened(broker, raw.open_socket(broker.port))
    attacker.sendall(raw.connect(attacker_client_id, broker.token(attacker_sub, "tablet"), clean=False))
    assert raw.connack_code(attacker) == NOT_AUTHORIZED
    assert_connect_refusal_counted(broker, caplog, before, attacker_client_id, "client_id_mismatch")
    # the owner is still connected, still subscribed, and still gets its messages
    owner.sendall(raw.PINGREQ)
    assert raw.read_packet(owner) == (PINGRESP, b"")
    publish_as_service(broker, "restaurant/7/orders", b"for the owner")
    kind, body = raw.expect_packet(owner)
    assert kind == 3 and body.endswith(b"for the owner")
    assert_still_serves(broker)


def test_a_token_with_a_numeric_string_exp_still_expires_and_other_deadlines_hold(broker, caplog):
    """PyJWT accepts `"exp": "<digits>"`; the guard compared it with a float and every sweep died on it.
    On NATS the minted user JWT carries the token's expiry and the server closes the connection itself."""
    before = count(DISCONNECTS, reason="token_expired")
    odd = opened(broker, raw.open_socket(broker.port))
    exp = str(int(time.time()) + 2)
    odd.sendall(raw.connect("dash", our_key(broker, claims(exp=exp, rid=broker.rid(7))), username="dash"))
    assert raw.connack_code(odd) == ACCEPTED
    other = opened(broker, raw.open_socket(broker.port))
    other.sendall(raw.connect("dash-2", broker.token("dash-2", "admin", ttl=2)))
    assert raw.connack_code(other) == ACCEPTED
    assert raw.closed_by_peer(odd, within=5.0)
    assert raw.closed_by_peer(other, within=3.0)
    if not on_nats(broker):
        assert_counted(DISCONNECTS, before, by=2, reason="token_expired")
        assert_logged(caplog, "disconnect client_id='dash'", "reason=token_expired")
        assert not [r for r in caplog.records if "sweep failed" in r.getMessage()]
    assert_still_serves(broker)


def test_a_paho_client_with_a_forged_token_sees_a_refusal(broker, rsa_key):
    """The same through a real client library: paho reports CONNACK 5 as 135 and does not get in."""
    forged = Subscriber(broker.port, "dash", hmac_signed(claims(), rsa_key[1]))
    assert forged.connect() == 135
    assert_still_serves(broker)
