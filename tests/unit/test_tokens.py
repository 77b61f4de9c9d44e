"""core.tokens: issuing and verifying JWTs, and the signing key of a data directory."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from core.tokens import (
    KEY_FILE,
    REQUIRED_CLAIMS,
    UNSCOPED_ROLES,
    Audience,
    TokenError,
    TokenService,
    load_or_create_key,
)
from core.topics import ROLES

KEY = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"


@pytest.fixture
def service() -> TokenService:
    return TokenService(KEY)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "user-1",
        "rid": 7,
        "role": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "a" * 32,
        "aud": "api",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not ...}


def craft(key: bytes = KEY, algorithm: str = "HS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm)


def refusal(service: TokenService, token: str, audience: Audience = "api") -> str:
    with pytest.raises(TokenError) as caught:
        service.verify(token, audience)
    return caught.value.reason


# ---------------------------------------------------------------------------------------------
# issue / verify


@pytest.mark.parametrize("audience", ["api", "mqtt"])
def test_roundtrip(service, audience):
    before = int(time.time())
    token = service.issue(sub="user-1", role="admin", rid=7, audience=audience, ttl_seconds=600)
    got = service.verify(token, audience)
    after = int(time.time())
    assert got["sub"] == "user-1"
    assert got["role"] == "admin"
    assert got["rid"] == 7
    assert got["aud"] == audience
    assert before <= got["iat"] <= after
    assert got["nbf"] == got["iat"]
    assert got["exp"] == got["iat"] + 600
    assert len(got["jti"]) == 32 and int(got["jti"], 16) >= 0
    assert set(REQUIRED_CLAIMS) <= set(got)


def test_token_header_says_hs256(service):
    token = service.issue(sub="user-1", role="admin", rid=7, audience="api", ttl_seconds=60)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_has_its_own_jti(service):
    tokens = [service.issue(sub="u", role="staff", rid=1, audience="api", ttl_seconds=60) for _ in range(20)]
    assert len({service.verify(token, "api")["jti"] for token in tokens}) == 20


def test_extra_claims(service):
    token = service.issue(
        sub="printer-1", role="printer", rid=7, audience="mqtt", ttl_seconds=60, extra={"station": "grill"}
    )
    assert service.verify(token, "mqtt")["station"] == "grill"


@pytest.mark.parametrize("reserved", ["sub", "rid", "role", "exp", "iat", "nbf", "jti", "aud"])
def test_extra_claims_cannot_override_the_checked_ones(service, reserved):
    value = {"role": "super_admin", "rid": None, "exp": 2**40, "aud": "mqtt"}.get(reserved, "x")
    with pytest.raises(ValueError, match="may not override"):
        service.issue(sub="u", role="staff", rid=7, audience="api", ttl_seconds=60, extra={reserved: value})


@pytest.mark.parametrize("role", sorted(UNSCOPED_ROLES))
def test_unscoped_roles_need_no_restaurant(service, role):
    token = service.issue(sub="svc", role=role, rid=None, audience="mqtt", ttl_seconds=60)
    got = service.verify(token, "mqtt")
    assert got["role"] == role
    assert got["rid"] is None


@pytest.mark.parametrize("role", sorted(ROLES - UNSCOPED_ROLES))
def test_scoped_roles_need_a_restaurant(service, role):
    with pytest.raises(ValueError, match="needs a restaurant"):
        service.issue(sub="u", role=role, rid=None, audience="api", ttl_seconds=60)


def test_issue_refuses_unknown_role(service):
    with pytest.raises(ValueError, match="unknown role"):
        service.issue(sub="u", role="chef", rid=7, audience="api", ttl_seconds=60)


@pytest.mark.parametrize("ttl", [0, -1, -3600])
def test_issue_refuses_a_non_positive_ttl(service, ttl):
    with pytest.raises(ValueError, match="ttl must be positive"):
        service.issue(sub="u", role="admin", rid=7, audience="api", ttl_seconds=ttl)


def test_token_error_is_a_value_error():
    error = TokenError("expired", "token has expired")
    assert isinstance(error, ValueError)
    assert error.reason == "expired"
    assert str(error) == "token has expired"


def test_expired(service):
    now = int(time.time())
    assert refusal(service, craft(iat=now - 120, nbf=now - 120, exp=now - 60)) == "expired"


def test_expiry_has_no_leeway(service):
    now = int(time.time())
    assert refusal(service, craft(iat=now - 120, nbf=now - 120, exp=now - 1)) == "expired"


def test_not_yet_valid(service):
    now = int(time.time())
    assert refusal(service, craft(nbf=now + 60, exp=now + 600)) == "not_yet_valid"


def test_wrong_audience(service):
    token = service.issue(sub="user-1", role="admin", rid=7, audience="api", ttl_seconds=60)
    assert refusal(service, token, audience="mqtt") == "wrong_audience"
    assert refusal(service, craft(aud="other")) == "wrong_audience"


def test_wrong_key(service):
    assert refusal(service, craft(key=OTHER_KEY)) == "bad_signature"
    foreign = TokenService(OTHER_KEY).issue(sub="u", role="admin", rid=7, audience="api", ttl_seconds=60)
    assert refusal(service, foreign) == "bad_signature"


def test_tampered_payload(service):
    token = service.issue(sub="user-1", role="staff", rid=7, audience="api", ttl_seconds=60)
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["role"] = "super_admin"
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    assert refusal(service, f"{header}.{forged}.{signature}") == "bad_signature"


def test_alg_none_is_refused(service):
    token = jwt.encode(claims(), "", algorithm="none")  # PyJWT takes "" as no key
    assert token.endswith(".")
    assert refusal(service, token) == "malformed"


def test_other_hmac_algorithms_are_refused(service):
    """Only HS256 is accepted, even when the signature checks out with the right key."""
    assert refusal(service, craft(algorithm="HS512")) == "malformed"


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "..."])
def test_garbage(service, garbage):
    assert refusal(service, garbage) == "malformed"


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_claims(service, claim):
    assert refusal(service, jwt.encode(claims(**{claim: ...}), KEY, algorithm="HS256")) == "missing_claim"


def test_empty_subject(service):
    assert refusal(service, craft(sub="")) == "missing_claim"


def test_unknown_role(service):
    assert refusal(service, craft(role="chef")) == "unknown_role"
    assert refusal(service, craft(role="Admin")) == "unknown_role"
    assert refusal(service, craft(role=["admin"])) == "unknown_role"
    assert refusal(service, craft(role=None)) == "missing_claim"  # a null claim counts as absent


@pytest.mark.parametrize("rid", [..., None, "7", 7.0, True, [7]])
@pytest.mark.parametrize("role", ["admin", "staff", "printer"])
def test_scoped_role_without_a_usable_restaurant(service, role, rid):
    assert refusal(service, craft(role=role, rid=rid)) == "missing_claim"


@pytest.mark.parametrize("role", sorted(UNSCOPED_ROLES))
def test_unscoped_role_without_rid_claim(service, role):
    assert service.verify(craft(role=role, rid=...), "api")["role"] == role


# ---------------------------------------------------------------------------------------------
# the key


def test_key_file_is_created_private(tmp_path: Path):
    data_dir = tmp_path / "data" / "nested"
    key = load_or_create_key(data_dir)
    path = data_dir / KEY_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64 and int(key, 16) >= 0
    assert path.read_bytes().strip() == key
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary file left behind


def test_key_file_is_private_whatever_the_umask(tmp_path: Path):
    previous = os.umask(0)
    try:
        load_or_create_key(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_key_is_created_once(tmp_path: Path):
    first = load_or_create_key(tmp_path)
    second = load_or_create_key(tmp_path)
    assert first == second


def test_each_data_directory_gets_its_own_key(tmp_path: Path):
    assert load_or_create_key(tmp_path / "a") != load_or_create_key(tmp_path / "b")


def test_existing_key_file_is_used(tmp_path: Path):
    (tmp_path / KEY_FILE).write_text("my-key-from-before\n")
    assert load_or_create_key(tmp_path) == b"my-key-from-before"


def test_configured_key_wins(tmp_path: Path):
    configured = "c" * 48
    assert load_or_create_key(tmp_path, configured) == configured.encode()
    assert not (tmp_path / KEY_FILE).exists()
    (tmp_path / KEY_FILE).write_text("file-key")
    assert load_or_create_key(tmp_path, configured) == configured.encode()


def test_empty_configured_key_falls_back_to_the_file(tmp_path: Path):
    assert load_or_create_key(tmp_path, "") == load_or_create_key(tmp_path)


def test_an_empty_key_file_is_an_error_not_an_empty_key(tmp_path: Path):
    (tmp_path / KEY_FILE).write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_key(tmp_path)


def test_concurrent_first_start_agrees_on_one_key(tmp_path: Path):
    """Processes starting together (broker, API, bridge) must not see an empty or a different key."""
    for round_ in range(40):
        data_dir = tmp_path / str(round_)
        barrier = threading.Barrier(4)
        keys: list[bytes] = []

        def start(barrier=barrier, data_dir=data_dir, keys=keys) -> None:
            barrier.wait()
            keys.append(load_or_create_key(data_dir))

        threads = [threading.Thread(target=start) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(keys) == 4
        assert len(set(keys)) == 1 and keys[0], round_


def test_generated_key_signs_and_verifies(tmp_path: Path):
    service = TokenService(load_or_create_key(tmp_path / "a"))
    other = TokenService(load_or_create_key(tmp_path / "b"))
    token = service.issue(sub="u", role="ops", rid=None, audience="mqtt", ttl_seconds=60)
    assert service.verify(token, "mqtt")["sub"] == "u"
    assert refusal(other, token, "mqtt") == "bad_signature"


def test_a_key_rotation_keeps_old_tokens_valid_only_while_their_key_is_listed():
    """docs/deploy.md's rotation: the new key signs; the old one still verifies until it is dropped."""
    old_token = TokenService(KEY).issue(sub="printer-1", role="printer", rid=7, audience="mqtt", ttl_seconds=60)
    rotating = TokenService(OTHER_KEY, previous=(KEY,))
    assert rotating.verify(old_token, "mqtt")["sub"] == "printer-1"
    new_token = rotating.issue(sub="printer-1", role="printer", rid=7, audience="mqtt", ttl_seconds=60)
    assert jwt.decode(new_token, OTHER_KEY, algorithms=["HS256"], audience="mqtt")["sub"] == "printer-1"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new_token, KEY, algorithms=["HS256"], audience="mqtt")
    with pytest.raises(TokenError) as refused:
        TokenService(OTHER_KEY).verify(old_token, "mqtt")  # the rotation is over: the old key is gone
    assert refused.value.reason == "bad_signature"
    with pytest.raises(TokenError) as foreign:
        rotating.verify(
            TokenService(b"x" * 64).issue(sub="a", role="admin", rid=7, audience="api", ttl_seconds=60), "api"
        )
    assert foreign.value.reason == "bad_signature"


def test_an_old_key_token_is_refused_for_what_it_is_not_for_its_key():
    """A previous key verifies the signature only: expiry and audience are checked as for any token."""
    rotating = TokenService(OTHER_KEY, previous=(KEY,))
    expired = jwt.encode(claims(exp=int(time.time()) - 5), KEY, algorithm="HS256")
    with pytest.raises(TokenError) as refused:
        rotating.verify(expired, "api")
    assert refused.value.reason == "expired"
    api_token = TokenService(KEY).issue(sub="u", role="admin", rid=7, audience="api", ttl_seconds=60)
    with pytest.raises(TokenError) as wrong:
        rotating.verify(api_token, "mqtt")
    assert wrong.value.reason == "wrong_audience"
