"""The embedded broker's connected clients, for operators: who is connected, from where, since when,
and how much waits for them; and an operator's disconnect of one.

Read from the broker's own tables (like `broker.metrics`), so the list cannot drift from the
connections. The API reads it through `app.state.clients` (the composition root wires it), from a
worker thread: the kick itself runs on the broker's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from broker.metrics import CONNECTED_AT, LISTENER, PEER, _snapshot, listener_of
from broker.plugins import CLAIMS, role_of

KICK_TIMEOUT_SECONDS = 5.0


def connected_clients(broker: Any) -> list[dict[str, Any]]:
    """One row per connected client, by client id."""
    outbox = getattr(getattr(broker, "router", None), "outbox", {})
    rows = []
    for client_id, (session, handler) in _snapshot(lambda: list(broker.sessions.items())):
        if handler is None or not session.transitions.is_connected():
            continue
        claims = session.attributes.get(CLAIMS) or {}
        outbound = outbox.get(client_id)
        since = session.attributes.get(CONNECTED_AT)
        rows.append(
            {
                "client_id": client_id,
                "role": role_of(session) if CLAIMS in session.attributes else "none",
                "restaurant_id": claims.get("rid"),
                "address": session.attributes.get(PEER),
                "listener": session.attributes.get(LISTENER) or listener_of(getattr(handler, "writer", None)),
                "connected_since": datetime.fromtimestamp(since, UTC).isoformat() if since else None,
                "queue_depth": len(outbound.queue) if outbound is not None else 0,
                "inflight": len(outbound.inflight) if outbound is not None else 0,
                "persistent": not session.clean_session,
            }
        )
    return sorted(rows, key=lambda row: row["client_id"])


class BrokerClients:
    """`app.state.clients` for a process running the embedded broker; `broker()` is None while stopped."""

    def __init__(self, broker: Callable[[], Any]) -> None:
        self.broker = broker

    def list(self) -> list[dict[str, Any]]:
        broker = self.broker()
        return connected_clients(broker) if broker is not None else []

    def disconnect(self, client_id: str) -> bool:
        """Close the client's connection; False when it is not connected. Call from a worker thread."""
        broker = self.broker()
        if broker is None or broker.loop is None:
            return False

        async def kick() -> bool:
            return bool(broker.kick(client_id))

        return asyncio.run_coroutine_threadsafe(kick(), broker.loop).result(KICK_TIMEOUT_SECONDS)
