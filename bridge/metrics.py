"""The bridge's metrics: the outbox relay's publishing, device messages applied or refused by ingest,
time-driven rules that failed, and the lease that lets one bridge at a time run them (bridge/lease.py).
Exposition lives above (`api.metrics`); this module only defines."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RELAY_PUBLISH_SECONDS = Histogram(
    "orderbus_relay_publish_seconds",
    "outbox relay: from publishing a message to the broker's PUBACK",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RELAY_EVENTS_PUBLISHED = Counter("orderbus_relay_events_published", "outbox events stamped published")
DEAD_LETTER_REASONS = ("too_large", "unencodable", "refused")
OUTBOX_DEAD_LETTERS = Counter(
    "orderbus_outbox_dead_letter",
    "outbox events the relay could not publish and set aside (their MQTT copy is withheld; /events has them), "
    "by reason: too_large (over the broker's packet limit), unencodable, refused (the broker kept dropping the "
    "connection while it was in flight)",
    ["reason"],
)
for _reason in DEAD_LETTER_REASONS:  # read 0 rather than be absent, so increase() sees the first one
    OUTBOX_DEAD_LETTERS.labels(reason=_reason)
OUTBOX_PRUNED = Counter("orderbus_outbox_pruned", "published outbox events deleted after the retention period")
INGEST_PROCESSED = Counter("orderbus_ingest_processed", "device messages applied", ["kind"])
INGEST_REJECTED = Counter("orderbus_ingest_rejected", "device messages refused", ["reason"])
SWEEP_FAILURES = Counter(
    "orderbus_sweep_failures", "time-driven device rules that raised (logged with their traceback)", ["sweep"]
)
CONNECT_FAILURES = Counter(
    "orderbus_bridge_connect_failures",
    "the relay's and ingest's attempts to connect to the broker that failed, by reason: network (no answer), "
    "tls (the broker's certificate did not verify against mqtt_tls_ca, or the TLS handshake failed), refused "
    "(CONNACK with an error code)",
    ["client", "reason"],
)
for _client in ("relay", "ingest"):
    for _why in ("network", "tls", "refused"):
        CONNECT_FAILURES.labels(client=_client, reason=_why)
BRIDGE_ACTIVE = Gauge(
    "orderbus_bridge_active", "1 while this process holds the bridge lease (runs relay, ingest, sweeper), 0 on standby"
)
BRIDGE_TAKEOVERS = Counter(
    "orderbus_bridge_lease_acquired",
    "times this process gained the bridge lease and started the relay, ingest and sweeper (its first start included)",
)
BRIDGE_LEASE_LOST = Counter(
    "orderbus_bridge_lease_lost",
    "times this process lost the bridge lease while active (its lease connection or lock file was gone) and stood down",
)
BRIDGE_START_FAILURES = Counter(
    "orderbus_bridge_start_failures", "times the relay, ingest or sweeper failed to start after gaining the lease"
)
BRIDGE_LEASE_ERRORS = Counter(
    "orderbus_bridge_lease_errors", "attempts to take the bridge lease that failed (the database did not answer)"
)
