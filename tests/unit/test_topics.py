"""broker.topics: validation, matching (MQTT 3.1.1 §4.7) and filter containment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.topics import MAX_TOPIC_BYTES, covers, is_valid_filter, is_valid_topic, matches

# ---------------------------------------------------------------------------------------------
# is_valid_topic / is_valid_filter


@pytest.mark.parametrize(
    "topic",
    ["a", "a/b", "restaurant/7/orders", "/", "/a", "a/", "a//b", "$SYS/broker/load", " ", "é/ü", "a" * MAX_TOPIC_BYTES],
)
def test_valid_topics(topic):
    assert is_valid_topic(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "+",
        "#",
        "a/+",
        "a/#",
        "a+b",
        "a#b",
        "restaurant/+/orders",
        "a\x00b",
        "\x00",
        "a" * (MAX_TOPIC_BYTES + 1),
        "é" * (MAX_TOPIC_BYTES // 2 + 1),  # 2 bytes each: the limit is in bytes, not characters
    ],
)
def test_invalid_topics(topic):
    assert not is_valid_topic(topic)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+",
        "+/+",
        "+/#",
        "/#",
        "+/",
        "/",
        "a//b",
        "restaurant/7/#",
        "restaurant/+/orders",
        "restaurant/7/orders/open/+",
        "$SYS/#",
        "$SYS/+/load",
        "a" * MAX_TOPIC_BYTES,
    ],
)
def test_valid_filters(topic_filter):
    assert is_valid_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a#",
        "#a",
        "##",
        "a/#/b",
        "#/a",
        "#/",
        "a/b#",
        "restaurant/7/or#ders",
        "restaurant/7/#/x",
        "a+",
        "+a",
        "++",
        "a/+b/c",
        "a/b+",
        "a\x00b",
        "restaurant/7/\x00",
        "a" * (MAX_TOPIC_BYTES + 1),
    ],
)
def test_invalid_filters(topic_filter):
    assert not is_valid_filter(topic_filter)


def test_every_valid_topic_is_a_valid_filter():
    for topic in ["a", "a/b", "/", "a//b", "$SYS/x"]:
        assert is_valid_topic(topic) and is_valid_filter(topic)


# ---------------------------------------------------------------------------------------------
# matches


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        # the examples of MQTT 3.1.1 §4.7.1
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player2", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        # exact names
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("ACCOUNTS", "Accounts", False),
        ("a//b", "a//b", True),
        ("a/+/b", "a//b", True),
        # the restaurant topics
        ("#", "restaurant/7/orders", True),
        ("restaurant/7/#", "restaurant/7", True),
        ("restaurant/7/#", "restaurant/7/orders", True),
        ("restaurant/7/#", "restaurant/7/orders/open/311", True),
        ("restaurant/7/#", "restaurant/77/orders", False),
        ("restaurant/7/#", "restaurant/8/orders", False),
        ("restaurant/+/orders", "restaurant/7/orders", True),
        ("restaurant/+/orders", "restaurant/7/orders/open/1", False),
        ("restaurant/7/orders/open/+", "restaurant/7/orders/open/311", True),
        ("restaurant/7/orders/open/+", "restaurant/7/orders/open", False),
    ],
)
def test_matches(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        # MQTT 3.1.1 §4.7.2: wildcards at the first level never match topics starting with $
        ("#", "$SYS", False),
        ("#", "$SYS/broker/load", False),
        ("+", "$SYS", False),
        ("+/#", "$SYS/broker", False),
        ("+/broker/load", "$SYS/broker/load", False),
        ("+/+/+", "$SYS/broker/load", False),
        ("#", "$anything", False),
        # … but filters naming the $ level do
        ("$SYS/#", "$SYS", True),
        ("$SYS/#", "$SYS/broker/load", True),
        ("$SYS/+/load", "$SYS/broker/load", True),
        ("$SYS/broker/load", "$SYS/broker/load", True),
        # a $ further down is an ordinary character
        ("a/+", "a/$SYS", True),
        ("a/#", "a/$SYS/x", True),
        ("+", "a$", True),
    ],
)
def test_dollar_topics(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


# ---------------------------------------------------------------------------------------------
# covers


@pytest.mark.parametrize(
    ("allowed", "requested", "expected"),
    [
        ("restaurant/7/#", "restaurant/7/#", True),
        ("restaurant/7/#", "restaurant/7", True),
        ("restaurant/7/#", "restaurant/7/orders", True),
        ("restaurant/7/#", "restaurant/7/orders/open/+", True),
        ("restaurant/7/#", "restaurant/7/+/x/#", True),
        ("restaurant/7/#", "restaurant/+/orders", False),
        ("restaurant/7/#", "restaurant/#", False),
        ("restaurant/7/#", "restaurant/+/#", False),
        ("restaurant/7/#", "#", False),
        ("restaurant/7/#", "+/#", False),
        ("restaurant/7/#", "+/7/#", False),
        ("restaurant/7/#", "restaurant/8/orders", False),
        ("restaurant/7/#", "restaurant", False),
        ("restaurant/+/orders", "restaurant/7/orders", True),
        ("restaurant/+/orders", "restaurant/+/orders", True),
        ("restaurant/+/orders", "restaurant/+/#", False),
        ("restaurant/+/orders", "restaurant/+/+", False),
        ("a/+", "a/#", False),  # the amqtt ACL mistake: `orders/+` is not `orders/#`
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/b/#", "a/#", False),  # a/# also matches `a`
        ("a/b/#", "a/b", True),
        ("a/+/#", "a/#", False),
        ("a/+/#", "a/+/+", True),
        ("a/b", "a/b", True),
        ("a/b", "a/+", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("+/+", "+/#", False),
        ("#", "#", True),
        ("#", "+", True),
        ("#", "+/x", True),
        ("+/#", "a/#", True),
        ("+/#", "a", True),
        # wildcards never reach $-topics, so they never cover a $ filter
        ("#", "$SYS/#", False),
        ("#", "$SYS", False),
        ("+/#", "$SYS/x", False),
        ("+", "$SYS", False),
        ("$SYS/#", "$SYS/#", True),
        ("$SYS/#", "$SYS/broker/load", True),
        ("$SYS/#", "#", False),
        ("$SYS/#", "+/x", False),
    ],
)
def test_covers(allowed, requested, expected):
    assert covers(allowed, requested) is expected


# ---------------------------------------------------------------------------------------------
# properties

LEVELS = ["restaurant", "7", "8", "orders", "open", "$SYS", ""]
FRESH = "zz"  # a level no generated filter names


def filter_from(levels: list[str], hash_tail: bool) -> str:
    return "/".join([*levels, "#"] if hash_tail else levels)


filters = st.builds(
    filter_from, st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=5), st.booleans()
).filter(bool)
topics = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=6).map("/".join).filter(is_valid_topic)


@st.composite
def generalisation(draw, topic_filter: str) -> str:
    """A filter that (usually) covers `topic_filter`: levels turned into `+`, or a `#` cut."""
    levels = topic_filter.split("/")
    out: list[str] = []
    for level in levels:
        if level == "#" or draw(st.integers(0, 5)) == 0:
            return filter_from(out, hash_tail=True)
        out.append("+" if draw(st.booleans()) else level)
    return filter_from(out, hash_tail=False)


@st.composite
def instance(draw, topic_filter: str, alphabet: list[str]) -> str:
    """A topic name built by filling the filter's wildcards (usually matched by it)."""
    out: list[str] = []
    for level in topic_filter.split("/"):
        if level == "+":
            out.append(draw(st.sampled_from(alphabet)))
        elif level == "#":
            out.extend(draw(st.lists(st.sampled_from(alphabet), max_size=3)))
        else:
            out.append(level)
    return "/".join(out)


def test_strategies_produce_valid_filters():
    for topic_filter in ["#", "+/#", "restaurant/+/orders/#", "$SYS/#", "/#"]:
        assert is_valid_filter(topic_filter)


@given(filters)
def test_generated_filters_are_valid(topic_filter):
    assert is_valid_filter(topic_filter)


@given(filters)
def test_covers_is_reflexive(topic_filter):
    assert covers(topic_filter, topic_filter)


@given(filters, st.data())
def test_filter_matches_its_instances(topic_filter, data):
    topic = data.draw(instance(topic_filter, [*LEVELS, FRESH]))
    if topic and not (topic.startswith("$") and topic_filter[0] in "+#"):
        assert matches(topic_filter, topic)


@given(filters, filters, topics)
def test_covers_is_sound_random(allowed, requested, topic):
    """If P covers F, every topic F matches is matched by P."""
    if covers(allowed, requested) and matches(requested, topic):
        assert matches(allowed, topic)


@given(st.data())
def test_covers_is_sound_related(data):
    """The same, with P derived from F and T from F so that the premise holds often."""
    requested = data.draw(filters)
    allowed = data.draw(st.one_of(generalisation(requested), filters))
    topic = data.draw(st.one_of(instance(requested, [*LEVELS, FRESH]), topics))
    if topic and covers(allowed, requested) and matches(requested, topic):
        assert matches(allowed, topic)


def witnesses(topic_filter: str, longest: int) -> list[str]:
    """Topics matched by `topic_filter` that are hardest for another filter to match."""
    levels = topic_filter.split("/")
    filled = [FRESH if level == "+" else level for level in levels]
    if levels[-1] != "#":
        return ["/".join(filled)]
    head = filled[:-1]
    return [t for k in range(longest + 2) if (t := "/".join(head + [FRESH] * k))]


def check_exact(allowed: str, requested: str) -> None:
    candidates = witnesses(requested, len(allowed.split("/")))
    assert all(matches(requested, topic) for topic in candidates)
    escapes = [topic for topic in candidates if not matches(allowed, topic)]
    if escapes:
        assert not covers(allowed, requested), escapes
    elif (allowed, requested) != ("+/#", "#"):
        # The one conservative answer: `#` and `+/#` match the same topic names (a name has at
        # least one level), yet `+/#` is not taken to cover `#`. A refusal, never a leak.
        assert covers(allowed, requested)


@given(filters, st.data())
def test_covers_is_exact(requested, data):
    """covers(P, F) is False only when some topic matched by F escapes P (no needless refusals)."""
    check_exact(data.draw(st.one_of(generalisation(requested), filters)), requested)


@pytest.mark.parametrize(
    ("allowed", "requested"),
    [("+/#", "#"), ("#", "+/#"), ("+/#", "+"), ("+", "+/#"), ("/#", "/"), ("$SYS/#", "$SYS"), ("+/+", "+/#")],
)
def test_covers_is_exact_examples(allowed, requested):
    check_exact(allowed, requested)


@given(filters, topics)
def test_wildcard_first_level_never_matches_dollar_topics(topic_filter, topic):
    if topic_filter[0] in "+#" and topic.startswith("$"):
        assert not matches(topic_filter, topic)


@given(topics)
def test_a_topic_name_matches_itself_only_as_filter(topic):
    assert matches(topic, topic)
    assert covers(topic, topic)
