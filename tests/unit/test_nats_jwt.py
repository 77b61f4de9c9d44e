"""broker.nats.nkeyjwt: the NATS JWTs we sign and read (ed25519 nkeys), and the callout's decisions.

What nats-server accepts from us is proven by tests/integration/test_nats_callout.py; here, that what we
sign verifies, that any change to a token breaks it, and that the decider refuses whatever it cannot
read, counted, without raising.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from broker.nats import nkeyjwt
from broker.nats.callout import EXPIRED_REQUEST, Credentials, Decider, authorization_block, permissions
from broker.policy import Grants, Policy
from config import DEFAULT_ACL_POLICY
from core.tokens import TokenService

ACCOUNT = nkeyjwt.new_seed("account")
SERVER = bytes(nkeyjwt.nkeys.encode_seed(b"n" * 32, nkeyjwt.nkeys.PREFIX_BYTE_SERVER))
TOKENS = TokenService(b"k" * 32)


def claims_of(token: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_a_signed_token_verifies_and_says_who_signed_it() -> None:
    token = nkeyjwt.encode({"sub": "x", "nats": {"type": "user", "version": 2}}, ACCOUNT, now=1000)
    claims = nkeyjwt.decode(token, issuer_role="account", kind="user", now=1000)
    assert claims["iss"] == nkeyjwt.public_key_of(ACCOUNT) and claims["iss"].startswith("A")
    assert claims["iat"] == 1000 and len(claims["jti"]) == 52
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_breaks_the_token(position: int, bit: int) -> None:
    token = nkeyjwt.encode({"sub": "x", "nats": {"type": "user", "version": 2}}, ACCOUNT)
    raw = bytearray(token.encode())
    index = position % len(raw)
    raw[index] ^= 1 << bit
    changed = bytes(raw)
    if changed.decode("latin-1") == token:
        return
    try:
        claims = nkeyjwt.decode(changed, issuer_role="account", kind="user")
    except nkeyjwt.NatsJwtError:
        return
    # base64url's last character carries spare bits: a flip there may decode to the same bytes
    assert claims == claims_of(token)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace(t.split(".")[0], nkeyjwt.b64url_encode(b'{"typ":"JWT","alg":"HS256"}')), "algorithm"),
        (lambda t: t + ".x", "three"),
        (lambda t: "x" * (nkeyjwt.MAX_TOKEN_BYTES + 1), "too large"),
        (lambda t: t.split(".")[0] + ".!!!." + t.split(".")[2], "JSON"),
    ],
)
def test_unreadable_tokens_say_why(change: Any, message: str) -> None:
    token = nkeyjwt.encode({"sub": "x", "nats": {"type": "user"}}, ACCOUNT)
    with pytest.raises(nkeyjwt.NatsJwtError, match=message):
        nkeyjwt.decode(change(token), issuer_role="account", kind="user")


def test_role_kind_and_time_are_checked() -> None:
    token = nkeyjwt.encode({"sub": "x", "exp": 2000, "nbf": 1500, "nats": {"type": "user"}}, ACCOUNT)
    with pytest.raises(nkeyjwt.NatsJwtError, match="server public key"):
        nkeyjwt.decode(token, issuer_role="server", kind="user", now=1600)
    with pytest.raises(nkeyjwt.NatsJwtError, match="not a authorization_request"):
        nkeyjwt.decode(token, issuer_role="account", kind="authorization_request", now=1600)
    with pytest.raises(nkeyjwt.NatsJwtError, match="expired"):
        nkeyjwt.decode(token, issuer_role="account", kind="user", now=2001)
    with pytest.raises(nkeyjwt.NatsJwtError, match="not yet valid"):
        nkeyjwt.decode(token, issuer_role="account", kind="user", now=1400)
    assert nkeyjwt.decode(token, issuer_role="account", kind="user", now=2000)["sub"] == "x"


def test_public_keys_are_checked_by_role_and_checksum() -> None:
    key = nkeyjwt.public_key_of(ACCOUNT)
    assert nkeyjwt.is_public_key(key, "account")
    assert not nkeyjwt.is_public_key(key, "user")
    assert not nkeyjwt.is_public_key(key[:-1] + ("A" if key[-1] != "A" else "B"), "account")
    assert not nkeyjwt.is_public_key("A" + "x" * 55, "account")
    assert not nkeyjwt.is_public_key(None, "account")


def test_an_empty_grant_denies_everything() -> None:
    """In a NATS user JWT an absent allow list allows everything: "nothing" is a deny of `>`."""
    assert permissions(Grants()) == {"sub": {"deny": [">"]}, "pub": {"deny": [">"]}}
    minted = permissions(Grants(subscribe=("restaurant/7/#",), publish=("restaurant/7/devices/*/status",)))
    assert minted == {"sub": {"allow": ["restaurant.7.>", "restaurant.7"]}, "pub": {"deny": [">"]}}


def test_authorization_block_and_credentials(tmp_path: Any) -> None:
    credentials = Credentials.load_or_create(tmp_path)
    assert Credentials.load_or_create(tmp_path) == credentials
    assert (tmp_path / "nats-callout.json").stat().st_mode & 0o777 == 0o600
    block = authorization_block(credentials.issuer_public_key, "cb", 'p"w')
    assert f'issuer: "{credentials.issuer_public_key}"' in block
    assert 'auth_users: [ "cb", "cb-sys", "cb-rmsgs", "cb-bus" ]' in block and 'password: "p\\"w"' in block
    # the relay's reader: plain NATS, one message of the retained stream at a time, its inbox; nothing else
    assert 'allowed_connection_types: [ "STANDARD" ]' in block
    assert 'publish: { allow: [ "$JS.API.STREAM.MSG.GET.$MQTT_rmsgs" ] }, subscribe: { allow: [ "_INBOX.>" ] }' in block
    with pytest.raises(ValueError, match="account public key"):
        authorization_block("UABC", "cb", "pw")
    with pytest.raises(ValueError, match="newlines"):
        authorization_block(credentials.issuer_public_key, "cb", "p\nw")
    with pytest.raises(ValueError, match="plain name"):
        authorization_block(credentials.issuer_public_key, "cb", "pw", account="AUTH")
    (tmp_path / "nats-callout.json").write_text("{")
    with pytest.raises(ValueError, match="delete the file"):
        Credentials.load_or_create(tmp_path)


def request(client_info: dict[str, Any], connect_opts: dict[str, Any], **nats: Any) -> bytes:
    body = {
        "aud": "nats-authorization-request",
        "sub": "A",
        "exp": int(time.time()) + 2,
        "nats": {
            "type": "authorization_request",
            "version": 2,
            "server_id": {"id": nkeyjwt.public_key_of(SERVER)},
            "user_nkey": nkeyjwt.public_key_of(nkeyjwt.new_seed("user")),
            "client_info": client_info,
            "connect_opts": connect_opts,
            **nats,
        },
    }
    return nkeyjwt.encode(body, SERVER).encode()


@pytest.fixture
def decider() -> Decider:
    return Decider(TOKENS, Policy.load(DEFAULT_ACL_POLICY), lambda claims: claims["sub"] == "revoked-1", ACCOUNT)


def count(result: str) -> float:
    return REGISTRY.get_sample_value("orderbus_callout_decisions_total", {"result": result}) or 0.0


def test_an_allowed_mqtt_client_gets_a_user_for_the_bus_account_until_its_token_expires(decider: Decider) -> None:
    token = TOKENS.issue(sub="kds-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60)
    data = request({"type": "mqtt", "mqtt_id": "kds-1", "id": 12}, {"pass": token, "auth_token": token})
    decision = decider.decide(data)
    assert decision.result == "allowed" and decision.admitted is not None and decision.admitted.cid == 12
    response = nkeyjwt.decode(decision.response, issuer_role="account", kind="authorization_response")
    asked = claims_of(data.decode())["nats"]
    assert response["sub"] == asked["user_nkey"] and response["aud"] == asked["server_id"]["id"]
    user = nkeyjwt.decode(response["nats"]["jwt"], issuer_role="account", kind="user")
    assert user["sub"] == asked["user_nkey"] and user["aud"] == "BUS" and user["exp"] == claims_of(token)["exp"]
    assert user["nats"]["pub"] == {"allow": ["restaurant.7.devices.kds-1.status", "restaurant.7.devices.kds-1.events"]}
    assert "restaurant.7.orders" in user["nats"]["sub"]["allow"]
    assert user["nats"]["allowed_connection_types"] == ["MQTT", "MQTT_WS"]


@pytest.mark.parametrize(
    ("client_info", "connect_opts", "result"),
    [
        ({"type": "nats", "id": 1}, {"pass": "T"}, "client_type"),
        ({"type": "websocket", "id": 1}, {"pass": "T"}, "client_type"),
        ({"type": "mqtt", "id": 1}, {"pass": "T"}, "client_type"),  # no client id
        ({"type": "mqtt", "mqtt_id": "kds-1"}, {"pass": "T", "jwt": "other"}, "token_mismatch"),
        ({"type": "mqtt", "mqtt_id": "kds-1"}, {}, "no_token"),
        ({"type": "mqtt", "mqtt_id": "kds-2"}, {"pass": "T"}, "client_id_mismatch"),
        ({"type": "mqtt", "mqtt_id": "revoked-1"}, {"pass": "R"}, "revoked"),
        ({"type": "mqtt", "mqtt_id": "kds-1"}, {"pass": "garbage"}, "malformed"),
    ],
)
def test_refusals_are_error_responses_and_counted(
    decider: Decider, client_info: dict[str, Any], connect_opts: dict[str, Any], result: str
) -> None:
    tokens = {
        "T": TOKENS.issue(sub="kds-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60),
        "R": TOKENS.issue(sub="revoked-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60),
    }
    connect_opts = {key: tokens.get(value, value) for key, value in connect_opts.items()}
    before = count(result)
    decision = decider.decide(request(client_info, connect_opts))
    assert decision.result == result and decision.admitted is None
    response = nkeyjwt.decode(decision.response, issuer_role="account", kind="authorization_response")
    assert response["nats"] == {"type": "authorization_response", "version": 2, "error": result}
    assert count(result) == before + 1


def test_a_request_not_for_the_callout_is_refused(decider: Decider) -> None:
    token = TOKENS.issue(sub="kds-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60)
    good = request({"type": "mqtt", "mqtt_id": "kds-1"}, {"pass": token})
    other = claims_of(good.decode()) | {"aud": "something-else"}
    assert decider.decide(nkeyjwt.encode(other, SERVER).encode()).result == "malformed_request"
    no_user = claims_of(good.decode())
    no_user["nats"]["user_nkey"] = "not-a-key"
    assert decider.decide(nkeyjwt.encode(no_user, SERVER).encode()).response == b""


def dropped() -> float:
    return REGISTRY.get_sample_value("orderbus_callout_dropped_total", {"reason": "expired"}) or 0.0


def test_a_request_read_after_its_deadline_is_dropped_and_counted_not_refused(decider: Decider) -> None:
    """NATS writes the request's `exp` in whole seconds, truncated, and gives up on the login at its real
    deadline, up to a second later: until then the request is still answered; after it, no answer helps,
    so none is made (an empty response: the responder sends nothing) and it is counted as dropped, not as
    a malformed request."""
    token = TOKENS.issue(sub="kds-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60)
    data = request({"type": "mqtt", "mqtt_id": "kds-1"}, {"pass": token})
    exp = claims_of(data.decode())["exp"]

    def at(moment: float) -> Decider:
        return Decider(decider.tokens, decider.policy, decider.refuses, ACCOUNT, now=lambda: moment)

    dropped_before, malformed_before = dropped(), count("malformed_request")
    assert at(exp + 0.5).decide(data).result == "allowed"  # within the truncated second: maybe still in time
    late = at(exp + 1.01).decide(data)
    assert (late.result, late.response, late.admitted) == (EXPIRED_REQUEST, b"", None)
    assert at(exp + 3600).past_deadline(data) and not at(exp).past_deadline(data)
    assert (dropped(), count("malformed_request")) == (dropped_before + 1, malformed_before)


@pytest.mark.parametrize("junk", [b"", b"garbage", b"a.b.c", b"a.bnVsbA.c", b"x." + base64.b64encode(b'{"exp": true}')])
def test_a_request_whose_time_cannot_be_read_is_not_dropped_but_refused_as_malformed(
    decider: Decider, junk: bytes
) -> None:
    late = Decider(decider.tokens, decider.policy, decider.refuses, ACCOUNT, now=lambda: time.time() + 10**6)
    before = dropped()
    assert not late.past_deadline(junk)
    assert late.decide(junk).result == "malformed_request" and dropped() == before


def test_a_forged_expiry_cannot_let_a_request_in(decider: Decider) -> None:
    """The deadline is read before the signature is checked; a request with a far-future `exp` but a bad
    signature is still refused as malformed (the look can only make us do less, never admit)."""
    token = TOKENS.issue(sub="kds-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60)
    head, body, _signature = request({"type": "mqtt", "mqtt_id": "kds-1"}, {"pass": token}).decode().split(".")
    claims = claims_of(f"{head}.{body}.x") | {"exp": int(time.time()) + 10**6}
    forged = f"{head}.{nkeyjwt.b64url_encode(json.dumps(claims).encode())}.{_signature}".encode()
    assert decider.decide(forged).result == "malformed_request"


def test_an_exception_while_deciding_is_a_counted_refusal(decider: Decider) -> None:
    def broken(_claims: dict[str, Any]) -> bool:
        raise RuntimeError("denylist unavailable")

    failing = Decider(TOKENS, decider.policy, broken, ACCOUNT)
    token = TOKENS.issue(sub="kds-1", role="tablet", rid=7, audience="mqtt", ttl_seconds=60)
    before = count("internal_error")
    decision = failing.decide(request({"type": "mqtt", "mqtt_id": "kds-1"}, {"pass": token}))
    assert decision.result == "internal_error" and decision.admitted is None
    assert b"jwt" not in base64.urlsafe_b64decode(decision.response.split(b".")[1] + b"==")
    assert count("internal_error") == before + 1
