"""Counters for refusals at the broker: every rejected CONNECT, SUBSCRIBE or PUBLISH is counted by reason."""

from prometheus_client import Counter

AUTH_FAILURES = Counter("orderbus_broker_auth_failures", "CONNECT attempts refused, by reason", ["reason"])
ACL_DENIALS = Counter(
    "orderbus_broker_acl_denials", "SUBSCRIBE, PUBLISH or delivery refused by the topic ACL", ["action", "role"]
)
