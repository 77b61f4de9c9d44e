"""Who may connect: the one CONNECT check every backend runs (the embedded broker's plugin, the NATS
auth-callout responder), so that the rules cannot drift apart between engines.

The token is the MQTT password; the client id must be the token's `sub` (or `sub:<suffix>`); the token
must verify for the audience, be unexpired and not revoked. What the connection may then do is the
policy's grants for its claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.policy import Grants, Policy
from core.tokens import PROBE_CLIENT_PREFIX, Audience, TokenError, TokenService


class Refused(ValueError):
    """A CONNECT refused; `reason` is the short word logged and counted (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Admission:
    claims: dict[str, Any]
    grants: Grants


def client_id_matches(client_id: str, sub: str) -> bool:
    """A client id is the token's `sub`, optionally with `:<suffix>` (one per browser tab)."""
    return client_id == sub or (client_id.startswith(sub + ":") and len(client_id) > len(sub) + 1)


def admit(
    tokens: TokenService,
    policy: Policy,
    refuses: Callable[[dict[str, Any]], bool],
    *,
    client_id: str,
    password: str | bytes | None,
    audience: Audience = "mqtt",
) -> Admission:
    """The claims and grants of an accepted CONNECT, or `Refused` saying why not."""
    if client_id.startswith(PROBE_CLIENT_PREFIX):  # a device agent asking whether we let anyone in: we do not
        raise Refused("probe")
    if not password:
        raise Refused("no_token")
    token = password.decode("utf-8", "replace") if isinstance(password, bytes) else str(password)
    try:
        claims = tokens.verify(token, audience=audience)
    except TokenError as exc:
        raise Refused(exc.reason) from exc
    if not client_id_matches(client_id, claims["sub"]):
        raise Refused("client_id_mismatch")
    if refuses(claims):
        raise Refused("revoked")
    return Admission(claims, policy.grants(claims))
