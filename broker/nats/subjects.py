"""MQTT topic filters as NATS subjects, the way nats-server's MQTT gateway converts them.

The gateway (nats-server `mqttToNATSSubjectConversion`) turns `/` into `.`, `+` into `*` and `#` into `>`;
an empty level becomes the token `/` (`a//b` → `a./.b`, `/a` → `/.a`, `a/` → `a./`) and a `.` inside a
level becomes `//` (`a.b` → `a//b`); whitespace and DEL are refused. A subscription on `a/#` is made as
two NATS subscriptions, `a.>` and `a` (MQTT's `#` also matches the parent level), so a grant of `a/#`
must allow both.

Permissions minted from our policy must mean exactly what the policy means, so what cannot be mapped
faithfully is refused (`UnmappableTopic`), and the caller leaves that grant out (deny by default):
- a level that is `*` or `>`, or contains either: a literal in MQTT, a wildcard (or a bad token) in NATS;
- a filter starting with a wildcard: MQTT's `#` and `+` never match `$` topics, NATS's `>` and `*` do
  (the gateway's own `$MQTT.…` subjects among them): with `>` allowed, an MQTT publish on
  `$JS/API/STREAM/DELETE/$MQTT_rmsgs` deletes the gateway's retained-message stream (verified on
  2.15.1); `subjects_for` also leaves out grants on `$` subjects other than `$SYS` for that reason;
- whitespace, DEL, NUL, or anything `broker.topics` calls invalid.
"""

from __future__ import annotations

from broker import topics

_FORBIDDEN = frozenset(" \t\n\r\f\x7f\x00*>")


class UnmappableTopic(ValueError):
    """An MQTT topic filter that has no faithful NATS subject."""


def _level(level: str) -> str:
    if level == "":
        return "/"
    if level == "+":
        return "*"
    if level == "#":
        return ">"
    if any(char in _FORBIDDEN for char in level):
        raise UnmappableTopic(f"level {level!r} cannot be a NATS token")
    return level.replace(".", "//")


def filter_to_subjects(topic_filter: str) -> tuple[str, ...]:
    """The NATS subjects a permission must allow for this MQTT filter (one, or two for a trailing `#`)."""
    if not topics.is_valid_filter(topic_filter):
        raise UnmappableTopic(f"{topic_filter!r} is not a valid MQTT topic filter")
    levels = topic_filter.split("/")
    if levels[0] in ("+", "#"):
        raise UnmappableTopic(f"{topic_filter!r} starts with a wildcard, which would reach $ subjects on NATS")
    subject = ".".join(_level(level) for level in levels)
    if levels[-1] == "#":
        return (subject, subject[: -len(".>")])
    return (subject,)


def topic_to_subject(topic: str) -> str:
    """The subject a PUBLISH on this MQTT topic name travels on (no wildcards)."""
    if not topics.is_valid_topic(topic):
        raise UnmappableTopic(f"{topic!r} is not a valid MQTT topic name")
    (subject,) = filter_to_subjects(topic)
    return subject


def subjects_for(patterns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(subjects, refused patterns) of a grant: every pattern that maps, deduplicated in order, and those
    that do not, or that start with a `$` level other than `$SYS` (NATS's own subjects are no grant)."""
    subjects: list[str] = []
    refused: list[str] = []
    for pattern in patterns:
        try:
            if pattern.startswith("$") and pattern.split("/")[0] != "$SYS":
                raise UnmappableTopic(f"{pattern!r} names NATS's internal subjects ($JS, $MQTT, $KV, …)")
            mapped = filter_to_subjects(pattern)
        except UnmappableTopic:
            refused.append(pattern)
            continue
        subjects.extend(subject for subject in mapped if subject not in subjects)
    return subjects, refused
