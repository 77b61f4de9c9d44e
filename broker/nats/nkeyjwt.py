"""NATS JWTs (`alg: ed25519-nkey`), written and read by us: the auth callout's request, response and user.

A NATS JWT is an ordinary three-part JWT whose header says `ed25519-nkey`, whose `iss` is the signer's
nkey public key (base32, a role letter first: `N` server, `A` account, `U` user) and whose NATS-specific
claims sit under `nats`, with `nats.type` naming the kind and `nats.version` 2. The server verifies the
signature with the key in `iss` and decides trust by comparing `iss` with its configuration, so this
module checks signatures and roles, and callers check who the issuer must be.

Written here (learning from nats-io/jwt, not copied) because it is small and its failures must be ours
to count: a malformed request is refused and counted, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import time
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
VERSION = 2
MAX_TOKEN_BYTES = 1024 * 1024  # what nats-io/jwt accepts
ROLES = {  # the first letter of a public key, and nkeys' prefix byte for its seed
    "server": ("N", nkeys.PREFIX_BYTE_SERVER),
    "account": ("A", nkeys.PREFIX_BYTE_ACCOUNT),
    "user": ("U", nkeys.PREFIX_BYTE_USER),
}


class NatsJwtError(ValueError):
    """A NATS JWT or nkey that does not parse, verify or fit; the message says which."""


class Expired(NatsJwtError):
    """A NATS JWT that verifies but whose `exp` has passed (beyond the leeway asked for)."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise NatsJwtError(f"not base64url: {exc}") from exc


def new_seed(role: str) -> bytes:
    """A fresh nkey seed (`SA…` for an account, `SU…` for a user) from the OS's random source."""
    return bytes(nkeys.encode_seed(os.urandom(32), ROLES[role][1]))


def public_key_of(seed: bytes) -> str:
    """The public key (`A…`, `U…`) of a seed."""
    try:
        return bytes(nkeys.from_seed(seed).public_key).decode("ascii")
    except (nkeys.NkeysError, binascii.Error, ValueError) as exc:
        raise NatsJwtError("not an nkey seed") from exc


def verify_key(public_key: str, role: str) -> nacl.signing.VerifyKey:
    """The ed25519 key inside a public nkey, after checking its role letter and its CRC."""
    letter, prefix = ROLES[role]
    if not isinstance(public_key, str) or not public_key.startswith(letter):
        raise NatsJwtError(f"not a {role} public key")
    try:
        raw = base64.b32decode(public_key.encode("ascii") + b"=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise NatsJwtError(f"{role} public key is not base32") from exc
    if len(raw) != 35 or raw[0] != prefix:
        raise NatsJwtError(f"not a {role} public key")
    body, crc = raw[:33], int.from_bytes(raw[33:], "little")
    if nkeys.crc16(bytearray(body)) != crc:
        raise NatsJwtError(f"{role} public key fails its checksum")
    return nacl.signing.VerifyKey(body[1:])


def is_public_key(value: object, role: str) -> bool:
    try:
        verify_key(value, role)  # type: ignore[arg-type]
    except NatsJwtError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def _signer(seed: bytes) -> tuple[Any, str]:
    """The key pair of a seed and its public key, made once: decoding a seed and deriving its public key
    cost about a third of a signature, twice per callout answer (a seed is bytes, so it can be a key)."""
    signer = nkeys.from_seed(seed)
    return signer, bytes(signer.public_key).decode("ascii")


def encode(claims: dict[str, Any], seed: bytes, *, now: float | None = None) -> str:
    """Sign `claims` with `seed`: `iss` becomes the seed's public key, `iat` now, `jti` a hash of the rest."""
    signer, public_key = _signer(bytes(seed))
    body = dict(claims)
    body["iss"] = public_key
    body["iat"] = int(time.time() if now is None else now)
    body.pop("jti", None)
    digest = hashlib.new("sha512_256", json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode("ascii")
    signing_input = f"{b64url_encode(json.dumps(HEADER).encode())}.{b64url_encode(json.dumps(body).encode())}"
    signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def unverified_expiry(token: str | bytes) -> float | None:
    """The `exp` a NATS JWT claims, read without verifying anything (None when there is none to read).
    Only for deciding to do less work: a forged value can make us skip a request, never accept one."""
    try:
        text = token.decode("ascii") if isinstance(token, bytes) else token
        exp = json.loads(b64url_decode(text.split(".")[1])).get("exp")
    except (IndexError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) and exp else None


def decode(
    token: str | bytes, *, issuer_role: str, kind: str, now: float | None = None, leeway: float = 0
) -> dict[str, Any]:
    """The claims of a NATS JWT of `kind` signed by a key of `issuer_role`, or NatsJwtError saying why not
    (`Expired` when only the time is wrong).

    Checks the header, the signature by the key in `iss`, `nats.type`, and `exp`/`nbf` against `now`;
    `exp` is read as `exp + leeway` (NATS writes whole seconds, truncated: the real expiry can be up to a
    second later than `exp` says).
    """
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise NatsJwtError("not ASCII") from exc
    if len(token) > MAX_TOKEN_BYTES:
        raise NatsJwtError("too large")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise NatsJwtError("not three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NatsJwtError(f"header or claims are not JSON: {exc}") from exc
    if not isinstance(header, dict) or str(header.get("typ", "")).upper() != "JWT":
        raise NatsJwtError("header is not a JWT's")
    if str(header.get("alg", "")).lower() != HEADER["alg"]:
        raise NatsJwtError(f"algorithm {header.get('alg')!r} is not {HEADER['alg']}")
    if not isinstance(claims, dict):
        raise NatsJwtError("claims are not an object")
    key = verify_key(str(claims.get("iss", "")), issuer_role)
    try:
        key.verify(f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2]))
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise NatsJwtError("signature does not verify") from exc
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != kind:
        raise NatsJwtError(f"not a {kind} JWT")
    moment = time.time() if now is None else now
    exp, nbf = claims.get("exp", 0), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise NatsJwtError("exp or nbf is not a number")
    if exp and moment > exp + leeway:
        raise Expired("expired")
    if nbf and nbf > moment:
        raise NatsJwtError("not yet valid")
    return claims
