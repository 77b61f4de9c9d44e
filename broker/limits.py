"""The limits that make the embedded broker safe to expose, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from core.sizes import MAX_PACKET_BYTES


@dataclass(frozen=True)
class Limits:
    connect_timeout_seconds: float = 10.0  # from TCP accept to a complete CONNECT
    keepalive_factor: float = 1.5  # a client silent for 1.5 x its keepalive is dropped (MQTT 3.1.1 §3.1.2.10)
    max_packet_bytes: int = MAX_PACKET_BYTES  # any single packet, TCP and WebSocket; input limits derive from it
    max_client_backlog_bytes: int = 1024 * 1024  # bytes waiting for a client that stopped reading
    max_offline_queue: int = 10_000  # messages kept for one disconnected persistent session
    max_inflight_messages: int = 100  # QoS 1/2 deliveries awaiting acknowledgement per session; the rest queue
    session_expiry_seconds: int = 7 * 24 * 3600  # a persistent session unused this long is forgotten
    max_connections: int = 10_000  # beyond this, CONNACK 3 (server unavailable)
    device_publishes_per_second: float = 20.0
    device_publish_burst: int = 60
    guard_interval_seconds: float = 0.25  # how often deadlines, expiry and revocation are checked
