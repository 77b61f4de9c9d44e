"""Counters for refusals at the broker: every rejected CONNECT, SUBSCRIBE or PUBLISH is counted by reason."""

from prometheus_client import Counter

AUTH_FAILURES = Counter("orderbus_broker_auth_failures", "CONNECT attempts refused, by reason", ["reason"])
ACL_DENIALS = Counter(
    "orderbus_broker_acl_denials", "SUBSCRIBE, PUBLISH or delivery refused by the topic ACL", ["action", "role"]
)
DROPPED = Counter("orderbus_broker_dropped_messages", "messages dropped by the broker, by cause", ["cause"])
DISCONNECTS = Counter("orderbus_broker_forced_disconnects", "connections closed by the broker, by reason", ["reason"])
REFUSED_CONNECTIONS = Counter(
    "orderbus_broker_refused_connections", "connections refused before a session, by reason", ["reason"]
)
REQUEUED = Counter(
    "orderbus_broker_requeued_deliveries", "QoS 1 deliveries not acknowledged in time, kept for the persistent session"
)
