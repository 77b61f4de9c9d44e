"""JWTs for the API and the broker: one signing key per deployment, never a constant in code."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt

from core.topics import OPS, ROLES, SERVICE, SUPER_ADMIN

ALGORITHM = "HS256"
Audience = Literal["api", "mqtt"]
UNSCOPED_ROLES = frozenset({SUPER_ADMIN, OPS, SERVICE})
REQUIRED_CLAIMS = ["sub", "role", "exp", "iat", "jti", "aud"]
KEY_FILE = "jwt.key"
# A device agent's first CONNECT, sent with no token to see whether the broker lets anyone in (then it is not
# orderbus's: devices/refusal.py). Our brokers refuse it as `probe`, counted apart from real bad logins.
PROBE_CLIENT_PREFIX = "orderbus-probe-"


class TokenError(ValueError):
    """A token was refused; `reason` is a short machine-friendly word for logs and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def load_or_create_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The configured key, else the data directory's key file, created once with mode 0600."""
    if configured:
        return configured.encode()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    if not path.exists():
        # Write the whole key to a private temporary file, then link it into place: a concurrent
        # starter either wins the link or reads a complete key, never an empty or half-written file.
        temporary = data_dir / f".{KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink()
    key = path.read_bytes().strip()
    if not key:
        raise ValueError(f"JWT key file {path} is empty; delete it to generate a new key")
    return key


@dataclass(frozen=True)
class TokenService:
    """Issues with `key`; verifies with `key`, then with each of `previous`.

    `previous` is for a key rotation (docs/deploy.md): every process gets the new key and keeps the
    old one here until the last token signed with it has expired or been re-issued, so nothing in
    the field is refused in between."""

    key: bytes
    previous: tuple[bytes, ...] = ()

    def issue(
        self,
        *,
        sub: str,
        role: str,
        rid: int | None,
        audience: Audience,
        ttl_seconds: int,
        extra: dict[str, Any] | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(sorted(ROLES))}")
        if rid is None and role not in UNSCOPED_ROLES:
            raise ValueError(f"role {role!r} needs a restaurant")
        if ttl_seconds <= 0:
            raise ValueError("ttl must be positive")
        reserved = {"sub", "rid", "role", "iat", "nbf", "exp", "jti", "aud"} & set(extra or {})
        if reserved:
            raise ValueError(f"extra claims may not override {', '.join(sorted(reserved))}")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "rid": rid,
            "role": role,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "aud": audience,
            **(extra or {}),
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def verify(self, token: str, audience: Audience, *, allow_expired: bool = False) -> dict[str, Any]:
        """Decoded claims, or TokenError saying why not.

        `allow_expired`: the claims of a genuine token past its `exp` too, for saying why a device is refused
        (revoked beats expired: a new token would not help a revoked device); never for letting anyone in."""
        refused: TokenError | None = None
        for key in (self.key, *self.previous):
            try:
                claims = _decode(token, key, audience, verify_exp=not allow_expired)
                break
            except TokenError as exc:
                if exc.reason != "bad_signature":
                    raise
                refused = exc
        else:
            assert refused is not None  # at least one key was tried
            raise refused
        role = claims.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise TokenError("unknown_role", f"unknown role {role!r}")
        rid = claims.get("rid")
        if role not in UNSCOPED_ROLES and (not isinstance(rid, int) or isinstance(rid, bool)):
            raise TokenError("missing_claim", "token has no restaurant (rid)")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenError("missing_claim", "token has no subject (sub)")
        return claims


def _decode(token: str, key: bytes, audience: Audience, *, verify_exp: bool = True) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            options={"require": REQUIRED_CLAIMS, "verify_exp": verify_exp},
            leeway=0,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("expired", "token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("not_yet_valid", "token is not yet valid") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("wrong_audience", f"token is not meant for {audience}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError("missing_claim", str(exc)) from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("bad_signature", "token signature does not verify") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("malformed", f"token is invalid: {exc}") from exc
