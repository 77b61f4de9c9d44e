"""The broker's listeners: their configuration for amqtt, the WebSocket handshake check, CONNACK refusals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from amqtt.adapters import WriterAdapter
from amqtt.mqtt.connack import ConnackPacket
from websockets.http11 import Request, Response

from broker.guard import Refuses
from broker.limits import Limits
from broker.policy import Policy
from broker.stats import REFUSED_CONNECTIONS
from core.tokens import TokenService

log = logging.getLogger("orderbus.broker")
WEBSOCKET_PATH = "/mqtt"


@dataclass(frozen=True)
class Listeners:
    host: str
    mqtt_port: int
    ws_port: int
    tls_port: int | None = None
    wss_port: int | None = None
    certfile: Path | None = None
    keyfile: Path | None = None


async def refuse(writer: WriterAdapter, return_code: int) -> None:
    with contextlib.suppress(Exception):
        await ConnackPacket.build(0, return_code).to_stream(writer)
        await asyncio.wait_for(writer.close(), 2)


def only_mqtt_path(connection: Any, request: Request) -> Response | None:
    """The WebSocket handshake: only at WEBSOCKET_PATH and with the `mqtt` subprotocol (without this check
    websockets refuses a missing subprotocol itself, with a traceback and no count)."""
    offered = {p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")}
    if request.path.split("?")[0] != WEBSOCKET_PATH:
        reason, status, text = "ws_path", 404, f"MQTT over WebSocket is served at {WEBSOCKET_PATH}\n"
    elif "mqtt" not in offered:
        reason, status, text = "ws_subprotocol", 400, "MQTT over WebSocket needs the `mqtt` subprotocol\n"
    else:
        return None
    REFUSED_CONNECTIONS.labels(reason=reason).inc()
    log.warning("websocket refused from %s reason=%s path=%.200r", connection.remote_address, reason, request.path)
    return connection.respond(status, text)


async def websocket_server(
    handler: Callable[[Any], Awaitable[None]], address: str | None, port: int, ssl_context: Any, limits: Limits
) -> Any:
    """MQTT over WebSocket at WEBSOCKET_PATH, with the `mqtt` subprotocol, packets up to the limit."""
    return await websockets.serve(
        handler,
        address,
        port,
        ssl=ssl_context,
        subprotocols=[websockets.Subprotocol("mqtt")],
        max_size=limits.max_packet_bytes + 16,
        compression=None,  # per-message deflate cost ~23% of send work for small JSON events (fan-out bench)
        # No WebSocket pings: MQTT keepalive (enforced at 1.5x) already finds dead clients, and
        # paho-mqtt answers a ping with an unmasked pong, which websockets rightly treats as a
        # protocol error: every paho WebSocket client was dropped 20 s after connecting.
        ping_interval=None,
        process_request=only_mqtt_path,
    )


def broker_config(
    listeners: Listeners, tokens: TokenService, policy: Policy, limits: Limits, refuses: Refuses | None = None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "session_expiry_interval": limits.session_expiry_seconds,
        "listeners": {
            "default": {"type": "tcp", "bind": f"{listeners.host}:{listeners.mqtt_port}"},
            "ws": {"type": "ws", "bind": f"{listeners.host}:{listeners.ws_port}"},
        },
        "plugins": {
            "broker.plugins.JwtAclPlugin": {"tokens": tokens, "policy": policy, "limits": limits, "refuses": refuses},
            "broker.metrics_plugin.MetricsPlugin": {},  # traffic counters, connection events, $SYS (docs/ops.md)
        },
    }
    tls = {"ssl": True, "certfile": str(listeners.certfile), "keyfile": str(listeners.keyfile)}
    if listeners.certfile and listeners.keyfile:
        if listeners.tls_port:
            config["listeners"]["tls"] = {"type": "tcp", "bind": f"{listeners.host}:{listeners.tls_port}", **tls}
        if listeners.wss_port:
            config["listeners"]["wss"] = {"type": "ws", "bind": f"{listeners.host}:{listeners.wss_port}", **tls}
    return config
