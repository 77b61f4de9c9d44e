"""broker.nats.subjects: MQTT filters as the NATS subjects nats-server's MQTT gateway uses.

The property: for every filter we map and every topic, NATS matching on the mapped subjects says what
MQTT matching (MQTT 3.1.1 §4.7, `broker.topics.matches`) says, so a permission minted from a grant
allows exactly the topics the grant allows.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import topics
from broker.nats.subjects import UnmappableTopic, filter_to_subjects, subjects_for, topic_to_subject


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` one or more trailing tokens."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(wanted) == len(tokens)


@pytest.mark.parametrize(
    ("topic_filter", "subjects"),
    [
        ("restaurant/7/orders", ("restaurant.7.orders",)),
        ("restaurant/7/#", ("restaurant.7.>", "restaurant.7")),
        ("restaurant/+/orders/open/+", ("restaurant.*.orders.open.*",)),
        ("$SYS/#", ("$SYS.>", "$SYS")),
        # what nats-server does with empty levels and dots (mqttToNATSSubjectConversion, checked on 2.15.1)
        ("a//b", ("a./.b",)),
        ("/a", ("/.a",)),
        ("a/", ("a./",)),
        ("/", ("/./",)),
        ("a///b", ("a././.b",)),
        ("a.b/c", ("a//b.c",)),
        ("/#", ("/.>", "/")),
    ],
)
def test_mapping(topic_filter: str, subjects: tuple[str, ...]) -> None:
    assert filter_to_subjects(topic_filter) == subjects


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",  # NATS's `>` would reach `$` subjects, `$MQTT.…` among them; MQTT's `#` does not
        "+/orders",
        "+",
        "a/*",  # a literal `*` in MQTT is a wildcard token in NATS
        "a/>",
        "a/b*c",
        "a/x>y",
        "a b/c",  # nats-server refuses whitespace
        "a\tb",
        "a\x7fb",
        "a/#/b",  # not a valid MQTT filter
        "a/b+",
        "",
    ],
)
def test_unmappable_filters_are_refused(topic_filter: str) -> None:
    with pytest.raises(UnmappableTopic):
        filter_to_subjects(topic_filter)


def test_topic_names_have_no_wildcards() -> None:
    assert topic_to_subject("restaurant/7/devices/kds.1/status") == "restaurant.7.devices.kds//1.status"
    for topic in ("a/+", "a/#", ""):
        with pytest.raises(UnmappableTopic):
            topic_to_subject(topic)


def test_subjects_for_keeps_order_drops_duplicates_and_reports_what_it_left_out() -> None:
    subjects, refused = subjects_for(("a/#", "a", "b/*", "c/+", "#", "$JS/API/#", "$MQTT/sess/x", "$SYS/#"))
    assert subjects == ["a.>", "a", "c.*", "$SYS.>", "$SYS"]
    assert refused == ["b/*", "#", "$JS/API/#", "$MQTT/sess/x"]  # NATS's own subjects are no grant


LEVELS = ["", "a", "b", "c.d", "$x", "é"]


@st.composite
def filters(draw: st.DrawFn) -> str:
    first = draw(st.sampled_from([level for level in LEVELS if level]))
    rest = draw(st.lists(st.sampled_from([*LEVELS, "+"]), max_size=4))
    if draw(st.booleans()):
        rest.append("#")
    return "/".join([first, *rest])


names = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=6).map("/".join).filter(topics.is_valid_topic)


@given(filters(), names)
def test_nats_matches_the_mapped_subjects_exactly_when_mqtt_matches_the_filter(topic_filter: str, topic: str) -> None:
    subject = topic_to_subject(topic)
    on_nats = any(nats_matches(pattern, subject) for pattern in filter_to_subjects(topic_filter))
    assert on_nats == topics.matches(topic_filter, topic)


@given(names)
def test_distinct_topics_travel_on_distinct_subjects(topic: str) -> None:
    """The mapping is one-to-one on topic names: no two topics share a subject (and a permission)."""
    subject = topic_to_subject(topic)
    for other in ("a", "a/b", "a//b", "a.b", "c.d/", "/c.d", topic + "/"):
        if other != topic and topics.is_valid_topic(other):
            assert topic_to_subject(other) != subject


@given(
    st.text(min_size=1, max_size=12),
    st.text(min_size=1, max_size=12),
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(["printer", "tablet", "scale", "admin", "staff", "service", "super_admin", "ops"]),
)
def test_claims_never_widen_a_minted_permission(sub: str, station: str, rid: int, role: str) -> None:
    """Whatever a token's claims hold, a NATS wildcard in a minted subject stands exactly where the
    policy's pattern has an MQTT wildcard: claims fill literal tokens or the grant is left out."""
    from broker.nats.callout import permissions
    from broker.policy import Policy
    from config import DEFAULT_ACL_POLICY

    grants = Policy.load(DEFAULT_ACL_POLICY).grants({"sub": sub, "station": station, "rid": rid, "role": role})
    minted = permissions(grants)
    for key, patterns in (("sub", grants.subscribe), ("pub", grants.publish)):
        allowed = set(minted[key].get("allow", []))
        expected: set[str] = set()
        for pattern in patterns:
            try:
                subjects = filter_to_subjects(pattern)
            except UnmappableTopic:
                continue
            for subject in subjects:
                levels = pattern.split("/")
                for level, token in zip(levels, subject.split("."), strict=False):
                    assert (token in ("*", ">")) == (level in ("+", "#")), (pattern, subject)
                expected.add(subject)
        assert allowed == expected
        assert not any(subject.startswith(("*", ">", "$MQTT", "$JS")) for subject in allowed)
