"""The NATS auth-callout responder: our JWT and our ACL policy for MQTT clients of a NATS cluster.

nats-server (config mode, `authorization { auth_callout { … } }`) sends every connection it cannot
authenticate itself as a request JWT, signed by the server's nkey, to `$SYS.REQ.USER.AUTH` in the
callout account. Verified on 2.15.1: an MQTT client's request carries `nats.client_info.type = "mqtt"`,
its client id in `client_info.mqtt_id`, its connection id (`cid`) in `client_info.id`, and the CONNECT
password in `connect_opts.pass` (and again in `connect_opts.auth_token`). The answer is an
`authorization_response` JWT (subject: the request's `user_nkey`, audience: the server's id) signed by
the issuer account's nkey, wrapping a `user` JWT with the connection's publish and subscribe allow
lists, its account (`aud`) and its expiry: the server disconnects the client at `exp` by itself.

`Decider` makes the decision with `broker.admission.admit` — the same check the embedded broker runs —
and mints the permissions from `broker.policy` grants (`broker.nats.subjects` maps them). Anything it
cannot decide (a request that does not verify, a non-MQTT client, a token field it does not expect, an
exception) is a refusal: an `error` response, or an empty reply when even the request's user key is
unreadable (the server refuses that too). It never lets a connection through by default.

`broker/nats/responder.py` is the NATS side: it answers the requests with this module's `Decider` and
kicks the connections of revoked devices.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from broker.admission import Refused, admit
from broker.nats import nkeyjwt, retained_consumers
from broker.nats.subjects import subjects_for
from broker.policy import Grants, Policy
from core.tokens import TokenService

log = logging.getLogger("orderbus.callout")

CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
REQUEST_AUDIENCE = "nats-authorization-request"
CALLOUT_ACCOUNT, BUS_ACCOUNT, SYSTEM_ACCOUNT = "AUTH", "BUS", "SYS"
CONNECTION_TYPES = ["MQTT", "MQTT_WS"]  # a minted user cannot connect as a plain NATS client
CREDENTIALS_FILE = "nats-callout.json"

DECISIONS = Counter(
    "orderbus_callout_decisions",
    "NATS auth-callout decisions: allowed, or the reason of a refusal (malformed_request, client_type, "
    "token_mismatch, expired, revoked, client_id_mismatch, internal_error, …)",
    ["result"],
)
for _result in ("allowed", "malformed_request", "client_type", "internal_error"):  # read 0 rather than be absent
    DECISIONS.labels(result=_result)
DROPPED = Counter(
    "orderbus_callout_dropped",
    "NATS auth-callout requests not answered because the server had already given up on them (reason "
    "`expired`: read after their deadline, so an answer would be wasted work); the server refuses those logins",
    ["reason"],
)
DROPPED.labels(reason="expired")
EXPIRED_REQUEST = "expired_request"  # a Decision's result: dropped, no reply
REQUEST_LEEWAY_SECONDS = 1.0  # the request's `exp` is whole seconds, truncated: its real deadline is up to 1 s later


def _quote(text: str) -> str:
    """A NATS config string: JSON quoting is valid NATS config syntax."""
    if any(ch in text for ch in "\n\r\x00"):
        raise ValueError("NATS config values cannot contain newlines or NUL")
    return json.dumps(text)


def system_user_of(auth_user: str) -> str:
    """The responder's user in the system account (a user name belongs to one account only)."""
    return f"{auth_user}-sys"


def retained_reader_of(auth_user: str) -> str:
    """The relay's read-only user in the bus account: it reads the retained messages from their stream
    (bridge/nats_retained.py). Same password as the responder: the holder of the credentials file holds
    the issuer's seed anyway, and could mint any user."""
    return f"{auth_user}-rmsgs"


def bus_user_of(auth_user: str) -> str:
    """The responder's user in the bus's account, for `retained_consumers` only."""
    return f"{auth_user}-bus"


def authorization_block(
    issuer_public_key: str, auth_user: str, auth_password: str, account: str = BUS_ACCOUNT, timeout_seconds: float = 2
) -> str:
    """The accounts and `authorization` part of a node's config: plug it into every node unchanged.

    Three accounts: `AUTH` holds only the responder (it sees every request, tokens included, so nothing
    else may live there); `account` (`BUS`) receives every MQTT client, with JetStream; `SYS` is the
    system account, with the responder's second user for kicks. `account` also holds the responder's
    third user, allowed only what `retained_consumers` asks of JetStream, and the relay's reader
    (`retained_reader_of`): plain NATS only, it may ask JetStream for one message of the retained stream
    at a time and receive the answers, nothing else. These users skip the callout.
    """
    if not nkeyjwt.is_public_key(issuer_public_key, "account"):
        raise ValueError("the callout issuer must be an account public key (A…)")
    if account in (CALLOUT_ACCOUNT, SYSTEM_ACCOUNT) or not account.isidentifier():
        raise ValueError(f"account {account!r} must be a plain name other than {CALLOUT_ACCOUNT} and {SYSTEM_ACCOUNT}")
    user, system_user, password = _quote(auth_user), _quote(system_user_of(auth_user)), _quote(auth_password)
    reader, get = _quote(retained_reader_of(auth_user)), _quote(f"$JS.API.STREAM.MSG.GET.{retained_consumers.STREAM}")
    reader_permissions = f'publish: {{ allow: [ {get} ] }}, subscribe: {{ allow: [ "_INBOX.>" ] }}'
    bus_user = _quote(bus_user_of(auth_user))
    may_publish = ", ".join(_quote(subject) for subject in retained_consumers.PUBLISH_ALLOWED)
    may_subscribe = ", ".join(_quote(subject) for subject in retained_consumers.SUBSCRIBE_ALLOWED)
    bus_permissions = f"{{ publish: [ {may_publish} ], subscribe: [ {may_subscribe} ] }}"
    return f"""accounts {{
  {CALLOUT_ACCOUNT} {{ users: [ {{ user: {user}, password: {password} }} ] }}
  {account} {{
    jetstream: enabled
    users: [ {{ user: {reader}, password: {password}, allowed_connection_types: [ "STANDARD" ],
                permissions: {{ {reader_permissions} }} }},
             {{ user: {bus_user}, password: {password}, permissions: {bus_permissions} }} ]
  }}
  {SYSTEM_ACCOUNT} {{ users: [ {{ user: {system_user}, password: {password} }} ] }}
}}
system_account: {SYSTEM_ACCOUNT}
authorization {{
  timeout: {timeout_seconds}
  auth_callout {{
    issuer: {_quote(issuer_public_key)}
    auth_users: [ {user}, {system_user}, {reader}, {bus_user} ]
    account: {CALLOUT_ACCOUNT}
  }}
}}
"""


@dataclass(frozen=True)
class Credentials:
    """What the nodes' config and the responder share: the issuer's nkey seed and the responder's login."""

    issuer_seed: bytes
    auth_user: str
    auth_password: str

    @property
    def issuer_public_key(self) -> str:
        return nkeyjwt.public_key_of(self.issuer_seed)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Credentials:
        """The data directory's file (mode 0600), created once: every node and responder read the same."""
        path = data_dir / CREDENTIALS_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            body = {
                "issuer_seed": nkeyjwt.new_seed("account").decode("ascii"),
                "auth_user": "orderbus-callout",
                "auth_password": secrets.token_urlsafe(32),
            }
            temporary = data_dir / f".{CREDENTIALS_FILE}.{secrets.token_hex(8)}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(body, handle)
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)  # a concurrent starter either wins or reads a complete file
            finally:
                temporary.unlink()
        try:
            raw = json.loads(path.read_text())
            credentials = cls(raw["issuer_seed"].encode("ascii"), str(raw["auth_user"]), str(raw["auth_password"]))
            credentials.issuer_public_key  # noqa: B018 - the seed must parse
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"NATS callout credentials {path} are unreadable ({exc}); delete the file") from exc
        return credentials


def user_name(claims: dict[str, Any]) -> str:
    """The NATS user name of a connection (`authorized_user` in CONNZ): `sub/role/rid/jti` (`-` for no
    restaurant), what the denylist and the operators' client list need, so a responder that did not admit
    a connection (restarted, or another one) can still judge it and say whose it is."""
    rid = claims.get("rid")
    return f"{claims['sub']}/{claims.get('role')}/{rid if isinstance(rid, int) else '-'}/{claims.get('jti')}"


def claims_of_user(name: str) -> dict[str, Any] | None:
    """The claims `user_name` wrote, or None for a name that is not one of ours. A name of the form
    before restaurants were in it (`sub/role/jti`, a connection older than this responder) has no `rid`."""
    parts = name.rsplit("/", 3)
    if len(parts) == 4 and all(parts) and (parts[2] == "-" or parts[2].isdigit()):
        return {"sub": parts[0], "role": parts[1], "rid": None if parts[2] == "-" else int(parts[2]), "jti": parts[3]}
    parts = name.rsplit("/", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return {"sub": parts[0], "role": parts[1], "jti": parts[2]}


def permissions(grants: Grants) -> dict[str, Any]:
    """The user JWT's `pub`/`sub`: allow lists of subjects; an empty list denies everything (`deny: [">"]`).

    In a NATS user JWT an absent allow list means *everything*, so "nothing" must be said as a deny.
    Patterns that cannot be mapped faithfully are left out (and logged): less, never more.
    """
    result: dict[str, Any] = {}
    for key, patterns in (("sub", grants.subscribe), ("pub", grants.publish)):
        subjects, refused = subjects_for(patterns)
        if refused:
            log.warning("callout: patterns with no NATS subject left out of %s: %s", key, refused)
        result[key] = {"allow": subjects} if subjects else {"deny": [">"]}
    return result


@dataclass(frozen=True)
class Admitted:
    """A connection let in: where it is (server id, connection id) and the claims it came with."""

    server_id: str
    cid: int
    claims: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    result: str  # "allowed", or the refusal's reason
    response: bytes  # the reply to send (an empty reply also refuses)
    admitted: Admitted | None = None


@dataclass
class Decider:
    """The pure part: an authorization request in, a signed response out."""

    tokens: TokenService
    policy: Policy
    refuses: Callable[[dict[str, Any]], bool]
    issuer_seed: bytes
    account: str = BUS_ACCOUNT
    now: Callable[[], float] = time.time

    def past_deadline(self, request: bytes) -> bool:
        """Whether the server has surely given up on this request already (its `exp`, read without
        verifying, plus the truncation's second): then no answer can help, and making one is wasted work."""
        exp = nkeyjwt.unverified_expiry(request)
        return exp is not None and self.now() > exp + REQUEST_LEEWAY_SECONDS

    def decide(self, request: bytes) -> Decision:
        """The answer to one request; `EXPIRED_REQUEST` (no reply, counted in DROPPED) when it came too late.

        The time check runs first and costs no signature check: under a backlog, every expired request
        skipped is a live one answered sooner."""
        if self.past_deadline(request):
            return self._dropped()
        try:
            claims = nkeyjwt.decode(
                request,
                issuer_role="server",
                kind="authorization_request",
                now=self.now(),
                leeway=REQUEST_LEEWAY_SECONDS,
            )
        except nkeyjwt.Expired:  # expired between the look above and now
            return self._dropped()
        except nkeyjwt.NatsJwtError as exc:
            log.warning("callout refused: malformed request (%s)", exc)
            return self._unverified_refusal(request, "malformed_request")
        nats = claims["nats"]
        try:
            user_nkey, server_id = str(nats["user_nkey"]), str(nats["server_id"]["id"])
            if claims.get("aud") != REQUEST_AUDIENCE or not nkeyjwt.is_public_key(user_nkey, "user"):
                raise ValueError("audience or user key")
        except (KeyError, TypeError, ValueError):
            log.warning("callout refused: malformed request (no user key, server id or audience)")
            return self._unverified_refusal(request, "malformed_request")
        try:
            return self._decide(nats, user_nkey, server_id)
        except Exception:  # fail closed, counted; the decision must never escape as a crash
            log.exception("callout refused: internal error")
            DECISIONS.labels(result="internal_error").inc()
            return Decision("internal_error", self._response(user_nkey, server_id, error="internal_error"))

    def _decide(self, nats: dict[str, Any], user_nkey: str, server_id: str) -> Decision:
        info, options = nats.get("client_info") or {}, nats.get("connect_opts") or {}
        client_id = info.get("mqtt_id")
        if info.get("type") != "mqtt" or not isinstance(client_id, str):
            return self._refuse(user_nkey, server_id, "client_type", client_id)
        given = {str(options[k]) for k in ("pass", "auth_token", "jwt") if options.get(k)}
        if len(given) > 1:  # the same CONNECT password is copied to several fields; two differing ones are not ours
            return self._refuse(user_nkey, server_id, "token_mismatch", client_id)
        try:
            admission = admit(
                self.tokens, self.policy, self.refuses, client_id=client_id, password=next(iter(given), None)
            )
        except Refused as exc:
            return self._refuse(user_nkey, server_id, exc.reason, client_id)
        claims = admission.claims
        user = {
            "sub": user_nkey,
            "aud": self.account,
            "exp": int(claims["exp"]),
            "name": user_name(claims),
            "nats": {
                "type": "user",
                "version": nkeyjwt.VERSION,
                **permissions(admission.grants),
                "subs": -1,
                "data": -1,
                "payload": -1,
                "allowed_connection_types": CONNECTION_TYPES,
            },
        }
        user_jwt = nkeyjwt.encode(user, self.issuer_seed, now=self.now())
        DECISIONS.labels(result="allowed").inc()
        log.info("callout allowed client_id=%r role=%s server=%s", client_id, claims.get("role"), server_id[:8])
        cid = info.get("id")
        admitted = Admitted(server_id, cid, claims) if isinstance(cid, int) else None
        return Decision("allowed", self._response(user_nkey, server_id, jwt=user_jwt), admitted)

    def _dropped(self) -> Decision:
        DROPPED.labels(reason="expired").inc()
        log.info("callout dropped a request read after its deadline")
        return Decision(EXPIRED_REQUEST, b"")

    def _refuse(self, user_nkey: str, server_id: str, reason: str, client_id: object) -> Decision:
        DECISIONS.labels(result=reason).inc()
        level = logging.INFO if reason == "probe" else logging.WARNING  # every device agent's start: not a warning
        log.log(level, "callout refused client_id=%r reason=%s", client_id, reason)
        return Decision(reason, self._response(user_nkey, server_id, error=reason))

    def _response(self, user_nkey: str, server_id: str, *, jwt: str = "", error: str = "") -> bytes:
        body: dict[str, Any] = {"type": "authorization_response", "version": nkeyjwt.VERSION}
        body |= {"jwt": jwt} if jwt else {"error": error}
        claims = {"sub": user_nkey, "aud": server_id, "nats": body}
        return nkeyjwt.encode(claims, self.issuer_seed, now=self.now()).encode("ascii")

    def _unverified_refusal(self, request: bytes, reason: str) -> Decision:
        """A refusal for a request we could not verify: addressed to its user key if one can be read
        (harmless: a refusal grants nothing), else an empty reply, which the server also reads as no."""
        DECISIONS.labels(result=reason).inc()
        try:
            payload = request.split(b".")[1]
            nats = json.loads(nkeyjwt.b64url_decode(payload.decode("ascii")))["nats"]
            user_nkey, server_id = nats["user_nkey"], nats["server_id"]["id"]
            if nkeyjwt.is_public_key(user_nkey, "user") and nkeyjwt.is_public_key(server_id, "server"):
                return Decision(reason, self._response(user_nkey, server_id, error=reason))
        except (IndexError, ValueError, KeyError, TypeError, UnicodeDecodeError, nkeyjwt.NatsJwtError):
            pass
        return Decision(reason, b"")
