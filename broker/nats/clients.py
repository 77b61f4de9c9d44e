"""The NATS cluster's MQTT clients, for operators: the same rows as `broker.clients` gives for the
embedded broker, read from every node's CONNZ through the responder's system-account connection, and
an operator's disconnect of one (KICK on the node that holds it).

What NATS does not say is None, not a guess: which listener (MQTT or MQTT over WebSocket: CONNZ shows
both as `mqtt`), the queue depth and the in-flight count (a session's queue is its JetStream consumer,
not the connection), and whether the session is persistent. The restaurant and role come from the
connection's user name, which the responder wrote from the token (`callout.user_name`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from broker.nats.callout import claims_of_user
from broker.nats.connections import cluster_connections, kick

ANSWER_SECONDS = 5.0


def client_rows(connections: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per MQTT connection, by client id (the relay's and the responder's own NATS connections are
    not MQTT clients and are left out)."""
    rows = []
    for _server_id, connection in connections:
        client_id = connection.get("mqtt_client")
        if connection.get("type") != "mqtt" or not isinstance(client_id, str) or not client_id:
            continue
        claims = claims_of_user(str(connection.get("authorized_user", ""))) or {}
        ip, port = connection.get("ip"), connection.get("port")
        rows.append(
            {
                "client_id": client_id,
                "role": claims.get("role", "none"),
                "restaurant_id": claims.get("rid"),
                "address": f"{ip}:{port}" if ip and port else None,
                "listener": None,
                "connected_since": _moment(connection.get("start")),
                "queue_depth": None,
                "inflight": None,
                "persistent": None,
            }
        )
    return sorted(rows, key=lambda row: row["client_id"])


def _moment(text: object) -> str | None:
    """CONNZ's `start` (RFC 3339 with nanoseconds) as the ISO 8601 the embedded broker gives, in UTC."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")).isoformat()
    except ValueError:
        return None


class NatsClients:
    """`app.state.clients` for a process running the responder; `system()` is its system-account
    connection (None while stopped), `loop` the loop it lives on. Called from the API's worker threads."""

    def __init__(self, system: Callable[[], Any], account: str, loop: asyncio.AbstractEventLoop) -> None:
        self.system = system
        self.account = account
        self.loop = loop

    def list(self) -> list[dict[str, Any]]:
        system = self.system()
        if system is None:
            return []
        return client_rows(self._run(cluster_connections(system, self.account)))

    def disconnect(self, client_id: str) -> bool:
        """Close every connection of `client_id` on the cluster; False when it has none."""
        system = self.system()
        if system is None:
            return False

        async def kick_all() -> bool:
            found = [
                (server_id, connection["cid"])
                for server_id, connection in await cluster_connections(system, self.account)
                if connection.get("type") == "mqtt" and connection.get("mqtt_client") == client_id
            ]
            for server_id, cid in found:
                await kick(system, server_id, cid)
            return bool(found)

        return bool(self._run(kick_all()))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(ANSWER_SECONDS)
