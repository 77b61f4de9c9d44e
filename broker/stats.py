"""The broker's counters: refusals (every rejected CONNECT, SUBSCRIBE or PUBLISH, by reason), sessions
and traffic. The figures that are state rather than events are read at scrape time (`broker.metrics`)."""

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
IGNORED = Counter(
    "orderbus_broker_ignored_packets",
    "packets the standard says to ignore (e.g. a PUBACK for a packet id not in flight), by reason",
    ["reason"],
)
INTERNAL_ERRORS = Counter(
    "orderbus_broker_internal_errors",
    "unexpected exceptions the broker survived (logged with their traceback), by where they happened",
    ["where"],
)
BROKER_CONNECTS = Counter(
    "orderbus_broker_connects", "MQTT sessions accepted (CONNACK 0), by role and listener", ["role", "listener"]
)
BROKER_DISCONNECTS = Counter(
    "orderbus_broker_disconnects",
    "MQTT sessions ended, by role, listener and reason (client: DISCONNECT sent; lost: the connection "
    "dropped without one, so the Last Will was published)",
    ["role", "listener", "reason"],
)

STORE_ERRORS = Counter(
    "orderbus_broker_store_errors",
    "trouble with the broker's durable store (broker.store), by reason: corrupt (unreadable file, or a row "
    "that does not parse: moved aside, started empty), schema_version (moved aside), write (a batch failed)",
    ["reason"],
)

DROP_CAUSES = ("queue_full", "rate_limit", "size")
for _cause in DROP_CAUSES:  # read 0 rather than be absent: a rate() over a missing series is "no data"
    DROPPED.labels(cause=_cause)


class Traffic:
    """MQTT traffic through one broker: plain integers, bumped once per packet on the broker's event
    loop (cheaper than a Counter's lock), exposed as counters by `broker.metrics.BrokerCollector`."""

    def __init__(self) -> None:
        self.packets_received = self.packets_sent = 0
        self.messages_received = self.messages_sent = 0  # PUBLISH packets
        self.bytes_received = self.bytes_sent = 0
