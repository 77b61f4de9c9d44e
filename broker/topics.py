"""MQTT topic names and filters: validation, matching and containment, as pure functions."""

from __future__ import annotations

MAX_TOPIC_BYTES = 65535


def is_valid_topic(topic: str) -> bool:
    """A topic name to publish to: non-empty, no wildcards, no NUL, fits in an MQTT string."""
    return (
        bool(topic)
        and "+" not in topic
        and "#" not in topic
        and "\x00" not in topic
        and len(topic.encode("utf-8", "surrogatepass")) <= MAX_TOPIC_BYTES
    )


def is_valid_filter(topic_filter: str) -> bool:
    """A subscription filter: `+` fills a whole level, `#` only as the whole last level."""
    if not topic_filter or "\x00" in topic_filter:
        return False
    if len(topic_filter.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` is delivered to a subscription on `topic_filter` (MQTT 3.1.1 §4.7)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def covers(allowed: str, requested: str) -> bool:
    """Whether every topic `requested` could match is also matched by `allowed`.

    This is what makes `restaurant/+/orders` a refusal for a dashboard allowed only
    `restaurant/7/#`: a subscription is granted only if it cannot reach further than the policy.
    """
    if allowed[:1] in ("+", "#") and requested.startswith("$"):
        return False  # wildcards never reach $-topics
    allowed_levels = allowed.split("/")
    requested_levels = requested.split("/")
    for index, level in enumerate(allowed_levels):
        if level == "#":
            return True
        if index >= len(requested_levels):
            return False
        wanted = requested_levels[index]
        if wanted == "#":
            return False
        if level == "+":
            continue
        if wanted == "+" or wanted != level:
            return False
    return len(requested_levels) == len(allowed_levels)
