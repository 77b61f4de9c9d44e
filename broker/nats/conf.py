"""One NATS node's configuration file, rendered from its ports, its place in the cluster and the limits.

The file is the whole contract with nats-server, which refuses an unknown key at start-up, so every
key here was checked against 2.15.1 by starting it (`nats-server -t`, tests/integration/test_nats_conf.py).
Authentication is a snippet from the caller placed at the top level verbatim: `password_auth()` for
development and tests, or the auth-callout responder's block (broker/nats/callout.py) in production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from broker.limits import Limits as EmbeddedLimits
from core.sizes import MAX_PACKET_BYTES

CLUSTER_NAME = "orderbus"
BUS_ACCOUNT = "BUS"  # the account of every MQTT client of the bus; MQTT needs JetStream enabled in it
SYSTEM_ACCOUNT = "SYS"


@dataclass(frozen=True)
class NodePorts:
    client: int  # NATS protocol (the responder and `nats` tools connect here)
    cluster: int  # routes between the nodes
    mqtt: int
    websocket: int  # MQTT over WebSocket at ws://host:port/mqtt (NATS serves MQTT on that path)
    monitor: int  # HTTP: /healthz, /varz, /jsz, /routez, /connz


@dataclass(frozen=True)
class NatsLimits:
    """Limits that keep a node safe to expose; where the embedded broker has the same limit, the same value."""

    max_payload: int = MAX_PACKET_BYTES  # every event the relay can make fits (core/sizes.py)
    max_pending: int = 8 * 1024 * 1024  # bytes waiting for one client that stopped reading; then it is dropped
    max_connections: int = 64_000  # per node: NATS's own default, so the idle-connection benchmark meets the machine
    # QoS 1 deliveries in flight per subscription (a `#` filter counts twice; at most 65,535 per session):
    # the embedded broker allows 100 per session, and a subscription here is at most a session's share of that.
    mqtt_max_ack_pending: int = EmbeddedLimits().max_inflight_messages
    mqtt_ack_wait: str = "30s"  # a QoS 1 message not acknowledged this long is sent again with DUP
    # A persistent session's consumer is deleted after this long without its client, as the embedded
    # broker forgets a session unused for `session_expiry_seconds` (a week).
    mqtt_consumer_inactive_threshold: str = f"{EmbeddedLimits().session_expiry_seconds // 3600}h"
    max_memory_store: str = "256MB"
    max_file_store: str = "4GB"
    # Every QoS 1 subscription of a persistent MQTT session is a JetStream consumer on one stream
    # ($MQTT_msgs). 2.15 caps a stream at 1,000 consumers by default, which a chain of 50 sites
    # (about 500 printers and tablets with two or three subscriptions each, the bus's own) exceeds.
    default_max_consumers: int = 20_000
    websocket_handshake_timeout: str = "5s"
    # The reconnect storm (docs/benchmarks.md, "Outgrow one machine"): every QoS 1 subscription is a
    # JetStream consumer made through the JetStream API, and a node's loss makes its clients' consumers
    # again all at once. Kept in memory (replicated like the stream), a consumer is made without a
    # file write; a longer MQTT JetStream API timeout lets a busy cluster finish a creation instead of
    # refusing the SUBACK, after which the client retries and the work was for nothing.
    # Measured (bench_fleet.py --storm, 10 sites, 490 clients, kill -9 of a node): with neither, not
    # settled in 120 s, 1,178 SUBACKs refused and the nodes at 1 GiB; with both, settled in 45 s, none refused, 252 MiB.
    mqtt_consumer_memory_storage: bool = True
    mqtt_js_api_timeout: str = "30s"  # nats-server's default is 5s


def _q(text: str | Path) -> str:
    """A quoted string in NATS configuration syntax (JSON's quoting is accepted)."""
    return json.dumps(str(text))


def password_auth(user: str, password: str) -> str:
    """Accounts for development and tests: one MQTT user in the bus's account, and the system account."""
    return (
        "accounts {\n"
        f"  {BUS_ACCOUNT}: {{\n"
        "    jetstream: enabled\n"
        f"    users: [ {{ user: {_q(user)}, password: {_q(password)} }} ]\n"
        "  }\n"
        f"  {SYSTEM_ACCOUNT}: {{}}\n"
        "}\n"
        f"system_account: {SYSTEM_ACCOUNT}\n"
    )


def render_node(
    *,
    name: str,
    host: str,
    ports: NodePorts,
    peers: list[NodePorts],
    store_dir: Path,
    auth: str,
    limits: NatsLimits = NatsLimits(),
    stream_replicas: int = 1,
) -> str:
    """The configuration of node `name`; `peers` are the other nodes (none: a single node, no cluster block)."""
    lines = [
        f"# orderbus node {name}: rendered by broker/nats/conf.py at each start; edits are overwritten",
        f"server_name: {_q(name)}",
        f"listen: {_q(f'{host}:{ports.client}')}",
        f"http: {_q(f'{host}:{ports.monitor}')}",
        f"max_payload: {limits.max_payload}",
        f"max_pending: {limits.max_pending}",
        f"max_connections: {limits.max_connections}",
        "",
        "jetstream {",
        f"  store_dir: {_q(store_dir)}",
        f"  max_memory_store: {limits.max_memory_store}",
        f"  max_file_store: {limits.max_file_store}",
        f"  limits {{ default_max_consumers: {limits.default_max_consumers} }}",
        "}",
    ]
    if peers:
        routes = ", ".join(_q(f"nats-route://{host}:{peer.cluster}") for peer in peers)
        lines += [
            "",
            "cluster {",
            f"  name: {CLUSTER_NAME}",
            f"  listen: {_q(f'{host}:{ports.cluster}')}",
            f"  routes: [ {routes} ]",
            "}",
        ]
    lines += [
        "",
        "mqtt {",
        f"  listen: {_q(f'{host}:{ports.mqtt}')}",
        f"  max_ack_pending: {limits.mqtt_max_ack_pending}",
        f"  ack_wait: {_q(limits.mqtt_ack_wait)}",
        f"  stream_replicas: {stream_replicas}",
        f"  consumer_inactive_threshold: {_q(limits.mqtt_consumer_inactive_threshold)}",
        f"  consumer_memory_storage: {str(limits.mqtt_consumer_memory_storage).lower()}",
        f"  js_api_timeout: {_q(limits.mqtt_js_api_timeout)}",
        "}",
        "",
        "# MQTT clients use the path /mqtt (MQTT.js, paho transport=websockets); no TLS: local development only",
        "websocket {",
        f"  listen: {_q(f'{host}:{ports.websocket}')}",
        "  no_tls: true",
        "  compression: false",
        f"  handshake_timeout: {_q(limits.websocket_handshake_timeout)}",
        "}",
        "",
        auth.rstrip(),
        "",
    ]
    return "\n".join(lines)
