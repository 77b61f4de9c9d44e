"""Why a device agent cannot get onto the bus, said in one line with what to do, instead of a retry loop.

MQTT 3.1.1's CONNACK carries no reason ("not authorised" is all a refused token hears), so an agent
finds the reason itself, before connecting and after a refused CONNACK:

- locally, from its token's own claims: past its `exp` (`expired`), or another role than the agent's
  (`wrong_role`: a scale token given to the printer);
- from the bus's API, `GET /api/v1/devices/me/status` with the token (api/routers/device_status.py): the bus checks
  the signature, then the device's record, and answers `revoked`, `replaced`, `unknown_device`, `bad_signature`, …

And it refuses a broker that is not orderbus's: orderbus's broker refuses every CONNECT without a valid token,
so a broker that accepts one whose password is no token at all (Mosquitto's anonymous listener holding 1883)
is not it. The probe sends that CONNECT — never the device's token — before the first real one.
"""

from __future__ import annotations

import socket
import ssl
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

from core.endpoints import parse_endpoints
from core.tokens import PROBE_CLIENT_PREFIX
from core.topics import DEVICE_ROLES

STATUS_PATH = "/api/v1/devices/me/status"
# the API's reasons about the token itself, not the device: another bus's API (a default --api-url meeting
# someone else's orderbus) says these of a token its own broker would take, so before a CONNECT they decide nothing
TOKEN_REASONS = frozenset({"bad_signature", "wrong_audience", "malformed", "missing_claim", "unknown_role"})
AGENT_OF_ROLE = {"printer": "printer", "tablet": "kds", "scale": "scale"}


@dataclass(frozen=True)
class Refusal:
    """Why the bus refuses this device: `reason` (a word, as the API spells it) and `detail` (a sentence)."""

    reason: str
    detail: str
    at: datetime | None = None

    def line(self, token: str) -> str:
        """`printer-1: token revoked at 12:03 UTC — register a new device …`: the reason and what to do."""
        claims = _claims(token)
        sub = claims.get("sub", "device")
        return f"{sub}: {self._what(claims)} — {self._todo(claims)}"

    def _what(self, claims: dict[str, Any]) -> str:
        when = f" at {self.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if self.at is not None else ""
        words = {
            "expired": f"token expired{when}",
            "revoked": f"device revoked{when}",
            "replaced": "token replaced by a newer one",
            "wrong_role": f"wrong role: {self.detail}",
            "not_orderbus": self.detail,
        }
        return words.get(self.reason, f"token refused ({self.reason}): {self.detail}")

    def _todo(self, claims: dict[str, Any]) -> str:
        sub, rid, role = claims.get("sub", "DEVICE"), claims.get("rid", "RID"), claims.get("role", "ROLE")
        station = f" --station {claims['station']}" if isinstance(claims.get("station"), str) else ""
        issue = f"`orderbus token --sub {sub} --restaurant {rid} --role {role}{station}`"
        api = f"POST /api/v1/restaurants/{rid}/devices/{sub}/token"
        if self.reason in ("expired", "replaced"):
            return f"issue a new one with {issue} or {api}"
        if self.reason == "revoked":
            return f"its tokens never work again: register a new device (POST /api/v1/restaurants/{rid}/devices)"
        if self.reason == "wrong_role":
            return (
                f"run `orderbus device {AGENT_OF_ROLE.get(str(role), '…')}` with this token, or give this agent a token"
                " of its own role"
            )
        if self.reason == "not_orderbus":
            return "point --mqtt-host/--mqtt-port (or the config file's mqtt_host/mqtt_port) at orderbus's broker"
        if self.reason in ("bad_signature", "wrong_audience", "malformed", "missing_claim", "unknown_role"):
            return f"this is no broker token of this bus: issue one with {issue} against its data directory"
        return f"check the device's registration, or issue a new token with {issue}"


class DeviceRefused(RuntimeError):
    """Raised before connecting when the agent must not even try: carries the one line to print."""

    def __init__(self, refusal: Refusal, token: str) -> None:
        super().__init__(refusal.line(token))
        self.refusal = refusal


class StatusUnavailable(RuntimeError):
    """The API did not say (unreachable, or an answer without a reason): the caller backs off and tries later."""


def _claims(token: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, options={"verify_signature": False, "verify_aud": False, "verify_exp": False})
    except jwt.PyJWTError:
        return {}


def local_refusal(token: str, expected_role: str | None, now: datetime | None = None) -> Refusal | None:
    """What the token's own claims already say: past `exp`, or not this agent's role. Not verified (the bus does)."""
    claims = _claims(token)
    role = claims.get("role")
    if expected_role is not None and role != expected_role:
        agent = AGENT_OF_ROLE.get(expected_role, expected_role)
        shown = role if role in DEVICE_ROLES else f"{role} (not a device)"
        return Refusal("wrong_role", f"the token is a {shown} token, this is the {agent} agent ({expected_role})")
    exp = claims.get("exp")
    if isinstance(exp, int | float):
        expires = datetime.fromtimestamp(exp, UTC)
        if expires <= (now or datetime.now(UTC)):
            return Refusal("expired", "token has expired", expires)
    return None


def ask_bus(api_url: str, token: str, timeout: float = 5.0) -> Refusal | None:
    """The bus's word on this token: a Refusal, or None when the broker should accept it; StatusUnavailable when
    the API cannot be asked (down, another service, an answer without a reason)."""
    try:
        response = httpx.get(
            f"{api_url.rstrip('/')}{STATUS_PATH}", headers={"authorization": f"Bearer {token}"}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise StatusUnavailable(f"{api_url}: {type(exc).__name__}") from exc
    if response.status_code == 200:
        return None
    try:
        body = response.json()
        reason, detail = str(body["reason"]), str(body["detail"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StatusUnavailable(f"{api_url}: HTTP {response.status_code} without a reason") from exc
    at = body.get("at")
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00")) if isinstance(at, str) else None
    except ValueError:
        when = None
    return Refusal(reason, detail, when)


def diagnose(token: str, expected_role: str | None, api_url: str | None) -> Refusal | None:
    """The local check, then the bus's; None when neither finds a reason. StatusUnavailable when the API can't say."""
    refusal = local_refusal(token, expected_role)
    if refusal is not None or api_url is None:
        return refusal
    return ask_bus(api_url, token)


def _connect_packet(client_id: str, username: str, password: str) -> bytes:
    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    # protocol MQTT level 4 (3.1.1), flags: user name, password, clean session; keepalive 10 s
    body = (
        field("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 10) + field(client_id) + field(username) + field(password)
    )
    remaining, length = b"", len(body)
    while True:  # the variable-length "remaining length"
        byte, length = length % 128, length // 128
        remaining += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + remaining + body


def accepts_anyone(host: str, port: int, tls: ssl.SSLContext | None = None, timeout: float = 3.0) -> bool | None:
    """True when the broker at host:port accepts a CONNECT whose password is no token (so it is not orderbus's),
    False when it refuses it, None when it cannot be asked (not reachable, TLS failing: the link says why)."""
    packet = _connect_packet(f"{PROBE_CLIENT_PREFIX}{uuid.uuid4().hex[:12]}", "orderbus-probe", "not-a-token")
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            sock.settimeout(timeout)
            sock.sendall(packet)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return False  # closed without a CONNACK: refused
                answer += chunk
            accepted = answer[0] == 0x20 and answer[3] == 0
            if accepted:
                sock.sendall(b"\xe0\x00")  # DISCONNECT: leave no Last Will, no session
            return accepted
    except (OSError, ssl.SSLError):
        return None


def preflight(
    token: str, expected_role: str, api_url: str | None, host: str, port: int, tls: ssl.SSLContext | None
) -> None:
    """Before an agent's first CONNECT: DeviceRefused when the token cannot work or the broker is not orderbus's.
    An API that cannot be asked is no reason to stop: the link asks again should the broker refuse."""
    refusal = local_refusal(token, expected_role)
    first_host, first_port = parse_endpoints(host, port, "--mqtt-host")[0]  # a cluster's nodes: the first one
    if refusal is None and accepts_anyone(first_host, first_port, tls):
        refusal = Refusal(
            "not_orderbus",
            f"the broker at {first_host}:{first_port} accepts connections without a valid token: "
            "it is not orderbus's broker",
        )
    if refusal is None and api_url is not None:
        try:
            refusal = ask_bus(api_url, token)
        except StatusUnavailable:
            refusal = None
        if refusal is not None and refusal.reason in TOKEN_REASONS:
            refusal = None  # the broker decides; should it refuse, the link asks again
    if refusal is not None:
        raise DeviceRefused(refusal, token)


def refuse_early(
    token: str, expected_role: str, api_url: str | None, host: str, port: int, tls: ssl.SSLContext | None
) -> None:
    """`preflight` for an agent's `run`: a refusal is one line on stderr and exit status 2. A token that is no
    JWT at all is left to the agent's own check, which says so."""
    import sys

    if not _claims(token):
        return
    try:
        preflight(token, expected_role, api_url, host, port, tls)
    except DeviceRefused as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
