"""broker.policy: the default ACL (config/acl.toml), grants per role, and policy-file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import topics
from broker.policy import Grants, Policy, PolicyError
from config import DEFAULT_ACL_POLICY
from core.topics import ROLES


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(DEFAULT_ACL_POLICY)


def test_default_policy_loads_every_role(policy):
    assert set(policy.roles) == ROLES


# ---------------------------------------------------------------------------------------------
# dashboards: admin, staff

DASHBOARD_REFUSED = [
    "#",
    "+/#",
    "+",
    "restaurant/+/orders",
    "restaurant/+/#",
    "restaurant/#",
    "restaurant",
    "restaurant/8/orders",
    "restaurant/8/#",
    "restaurant/77/orders",
    "$SYS/#",
    "$SYS/broker/load",
    # invalid filters are refused even where the topic would be allowed
    "restaurant/7/or#ders",
    "restaurant/7/#/x",
    "restaurant/7/orders+",
    "",
    "a\x00b",
    "restaurant/7/\x00",
]


@pytest.mark.parametrize("role", ["admin", "staff"])
@pytest.mark.parametrize(
    "topic_filter",
    [
        "restaurant/7/#",
        "restaurant/7",
        "restaurant/7/orders",
        "restaurant/7/orders/open/+",
        "restaurant/7/+",
        "restaurant/7/+/#",
        "restaurant/7/inventory/items/42",
        "restaurant/7/devices/+/status",
    ],
)
def test_dashboard_may_subscribe_its_restaurant(policy, role, topic_filter):
    assert policy.grants({"role": role, "rid": 7, "sub": "user-1"}).may_subscribe(topic_filter)


@pytest.mark.parametrize("role", ["admin", "staff"])
@pytest.mark.parametrize("topic_filter", DASHBOARD_REFUSED)
def test_dashboard_refused_beyond_its_restaurant(policy, role, topic_filter):
    assert not policy.grants({"role": role, "rid": 7, "sub": "user-1"}).may_subscribe(topic_filter)


@pytest.mark.parametrize("role", ["admin", "staff"])
@pytest.mark.parametrize(
    "topic", ["restaurant/7/orders", "restaurant/7/devices/printer-1/status", "restaurant/8/orders", "x"]
)
@pytest.mark.parametrize("retain", [False, True])
def test_dashboard_may_publish_nothing(policy, role, topic, retain):
    assert not policy.grants({"role": role, "rid": 7, "sub": "user-1"}).may_publish(topic, retain=retain)


def test_dashboard_receives_its_restaurant_only(policy):
    grants = policy.grants({"role": "admin", "rid": 7, "sub": "user-1"})
    assert grants.may_receive("restaurant/7/orders")
    assert grants.may_receive("restaurant/7/orders/open/311")
    assert grants.may_receive("restaurant/7")
    assert not grants.may_receive("restaurant/8/orders")
    assert not grants.may_receive("restaurant/77/orders")
    assert not grants.may_receive("$SYS/broker/load")
    assert not grants.may_receive("secret/pin")


@pytest.mark.parametrize("claims", [{"role": "admin"}, {"role": "admin", "rid": None}, {"role": "admin", "rid": ""}])
def test_dashboard_without_restaurant_gets_nothing(policy, claims):
    grants = policy.grants(claims)
    assert grants == Grants()
    assert not grants.may_subscribe("restaurant/7/#")
    assert not grants.may_subscribe("restaurant//#")


def test_super_admin_sees_every_restaurant_but_not_sys(policy):
    grants = policy.grants({"role": "super_admin", "sub": "root"})
    for allowed in ["restaurant/#", "restaurant/+/orders", "restaurant/8/#", "restaurant"]:
        assert grants.may_subscribe(allowed), allowed
    for refused in ["#", "+/#", "$SYS/#", "other/x"]:
        assert not grants.may_subscribe(refused), refused
    assert not grants.may_publish("restaurant/7/orders")
    assert not grants.may_publish("restaurant/7/orders", retain=True)


# ---------------------------------------------------------------------------------------------
# printer

PRINTER = {"role": "printer", "rid": 7, "sub": "printer-1", "station": "grill"}


@pytest.mark.parametrize(
    "topic_filter",
    [
        "restaurant/7/kitchen/grill/tickets",
        "restaurant/7/orders/open/+",
        "restaurant/7/orders/open/311",
        "restaurant/7/devices/printer-1/commands",
    ],
)
def test_printer_may_subscribe(policy, topic_filter):
    assert policy.grants(PRINTER).may_subscribe(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "restaurant/7/kitchen/bar/tickets",
        "restaurant/7/kitchen/+/tickets",
        "restaurant/7/kitchen/#",
        "restaurant/8/kitchen/grill/tickets",
        "restaurant/+/kitchen/grill/tickets",
        "restaurant/7/orders",
        "restaurant/7/orders/#",
        "restaurant/7/orders/open/#",
        "restaurant/7/devices/printer-2/commands",
        "restaurant/7/devices/+/commands",
        "restaurant/7/devices/printer-1/#",
        "restaurant/7/devices/printer-1/status",
        "restaurant/7/inventory",
        "restaurant/7/#",
        "#",
    ],
)
def test_printer_refused(policy, topic_filter):
    assert not policy.grants(PRINTER).may_subscribe(topic_filter)


def test_printer_publishes_its_own_presence_and_events(policy):
    grants = policy.grants(PRINTER)
    assert grants.may_publish("restaurant/7/devices/printer-1/status")
    assert grants.may_publish("restaurant/7/devices/printer-1/status", retain=True)
    assert grants.may_publish("restaurant/7/devices/printer-1/events")
    # retained only on its own status
    assert not grants.may_publish("restaurant/7/devices/printer-1/events", retain=True)
    for refused in [
        "restaurant/7/devices/printer-2/status",
        "restaurant/7/devices/printer-2/events",
        "restaurant/8/devices/printer-1/status",
        "restaurant/7/devices/printer-1/commands",
        "restaurant/7/devices/printer-1/readings",
        "restaurant/7/kitchen/grill/tickets",
        "restaurant/7/orders",
        "restaurant/7/orders/open/311",
        "restaurant/7/devices/printer-1/+",  # a wildcard is not a topic name
        "restaurant/7/devices/+/status",
    ]:
        assert not grants.may_publish(refused), refused
        assert not grants.may_publish(refused, retain=True), refused


@pytest.mark.parametrize("station", [None, "", "gr+ill", "#", "grill/bar", "a\x00"])
def test_printer_without_a_usable_station_gets_no_tickets(policy, station):
    claims = {**PRINTER, "station": station}
    if station is None:
        del claims["station"]
    grants = policy.grants(claims)
    assert not any("kitchen" in pattern for pattern in grants.subscribe)
    assert not grants.may_subscribe("restaurant/7/kitchen/grill/tickets")
    assert not grants.may_subscribe("restaurant/7/kitchen/+/tickets")
    assert not grants.may_receive("restaurant/7/kitchen/grill/tickets")
    # the patterns without {station} still apply
    assert grants.may_subscribe("restaurant/7/devices/printer-1/commands")
    assert grants.may_subscribe("restaurant/7/orders/open/+")


@pytest.mark.parametrize("sub", ["a/+", "+", "#", "a/#", "printer-1/status", "a\x00b", ""])
def test_claims_cannot_inject_wildcards_or_levels(policy, sub):
    grants = policy.grants({**PRINTER, "sub": sub})
    assert grants.publish == ()
    assert grants.retain == ()
    assert grants.subscribe == ("restaurant/7/kitchen/grill/tickets", "restaurant/7/orders/open/+")
    assert not grants.may_subscribe("restaurant/7/devices/+/commands")
    assert not grants.may_publish("restaurant/7/devices/a/status")
    assert not grants.may_publish("restaurant/7/devices/printer-1/status")


@pytest.mark.parametrize("rid", ["+", "#", "7/#", "7/x", "\x00"])
def test_restaurant_claim_cannot_inject(policy, rid):
    for role in ["admin", "staff", "printer", "tablet", "scale"]:
        grants = policy.grants({"role": role, "rid": rid, "sub": "dev-1", "station": "grill"})
        assert grants == Grants(), role


# ---------------------------------------------------------------------------------------------
# tablet, scale, ops, service


def test_tablet(policy):
    grants = policy.grants({"role": "tablet", "rid": 7, "sub": "kds-1"})
    for allowed in [
        "restaurant/7/orders",
        "restaurant/7/orders/open/+",
        "restaurant/7/kitchen/+/tickets",
        "restaurant/7/kitchen/bar/tickets",
        "restaurant/7/devices/kds-1/commands",
    ]:
        assert grants.may_subscribe(allowed), allowed
    for refused in [
        "restaurant/7/#",
        "restaurant/7/orders/#",
        "restaurant/7/devices/kds-2/commands",
        "restaurant/7/menu",
    ]:
        assert not grants.may_subscribe(refused), refused
    assert grants.may_publish("restaurant/7/devices/kds-1/events")
    assert grants.may_publish("restaurant/7/devices/kds-1/status", retain=True)
    assert not grants.may_publish("restaurant/7/devices/kds-1/events", retain=True)
    assert not grants.may_publish("restaurant/7/orders")


def test_scale_publishes_only_its_own_readings(policy):
    grants = policy.grants({"role": "scale", "rid": 7, "sub": "scale-1"})
    assert grants.may_publish("restaurant/7/devices/scale-1/readings")
    assert grants.may_publish("restaurant/7/devices/scale-1/status")
    assert grants.may_publish("restaurant/7/devices/scale-1/status", retain=True)
    assert not grants.may_publish("restaurant/7/devices/scale-1/readings", retain=True)
    assert not grants.may_publish("restaurant/7/devices/scale-2/readings")
    assert not grants.may_publish("restaurant/8/devices/scale-1/readings")
    assert not grants.may_publish("restaurant/7/devices/scale-1/events")
    assert not grants.may_publish("restaurant/7/inventory")
    assert grants.may_subscribe("restaurant/7/devices/scale-1/commands")
    assert not grants.may_subscribe("restaurant/7/devices/scale-2/commands")
    assert not grants.may_subscribe("restaurant/7/inventory")


def test_ops_gets_sys_only(policy):
    grants = policy.grants({"role": "ops", "sub": "ops-1"})
    assert grants.may_subscribe("$SYS/#")
    assert grants.may_subscribe("$SYS/broker/load/+")
    assert grants.may_receive("$SYS/broker/clients/connected")
    for refused in ["#", "+/#", "restaurant/#", "restaurant/7/orders"]:
        assert not grants.may_subscribe(refused), refused
    assert not grants.may_receive("restaurant/7/orders")
    assert not grants.may_publish("$SYS/broker/load")


def test_service_publishes_under_restaurant_retained_included(policy):
    grants = policy.grants({"role": "service", "sub": "relay"})
    for topic in ["restaurant/7/orders", "restaurant/7/orders/open/311", "restaurant/8/inventory/items/1"]:
        assert grants.may_publish(topic), topic
        assert grants.may_publish(topic, retain=True), topic
    for refused in ["$SYS/broker/load", "other/x", "restaurants/7/orders", "restaurant/+/orders"]:
        assert not grants.may_publish(refused), refused
        assert not grants.may_publish(refused, retain=True), refused


def test_service_subscribes_to_device_topics_and_reads_back_the_retained_state_only(policy):
    """The relay reads what the broker holds retained (open orders, item stock) to rebuild it."""
    grants = policy.grants({"role": "service", "sub": "ingest"})
    for allowed in [
        "restaurant/+/orders/open/+",
        "restaurant/+/inventory/items/+",
        "restaurant/7/orders/open/311",
        "restaurant/+/devices/+/status",
        "restaurant/+/devices/+/events",
        "restaurant/+/devices/+/readings",
        "restaurant/7/devices/scale-1/readings",
    ]:
        assert grants.may_subscribe(allowed), allowed
    for refused in [
        "restaurant/#",
        "restaurant/+/devices/#",
        "restaurant/+/devices/+/commands",
        "restaurant/7/orders",
        "restaurant/+/orders/#",
        "restaurant/+/orders/+/+",
        "restaurant/+/inventory/#",
        "restaurant/+/kitchen/+/tickets",
    ]:
        assert not grants.may_subscribe(refused), refused


@pytest.mark.parametrize("claims", [{"role": "chef", "rid": 7, "sub": "x"}, {"rid": 7, "sub": "x"}, {"role": None}, {}])
def test_unknown_role_gets_nothing(policy, claims):
    grants = policy.grants(claims)
    assert grants == Grants()
    assert not grants.may_subscribe("restaurant/7/#")
    assert not grants.may_receive("restaurant/7/orders")
    assert not grants.may_publish("restaurant/7/orders")


# ---------------------------------------------------------------------------------------------
# the policy as a whole: a granted filter never delivers a topic that may not be received

LEVELS = [
    "restaurant",
    "7",
    "8",
    "orders",
    "open",
    "311",
    "kitchen",
    "grill",
    "bar",
    "tickets",
    "devices",
    "dev-1",
    "dev-2",
    "commands",
    "status",
    "events",
    "readings",
    "inventory",
    "$SYS",
    "broker",
]
CLAIMS = {"rid": 7, "sub": "dev-1", "station": "grill"}


def random_filter() -> st.SearchStrategy[str]:
    return st.builds(
        lambda levels, tail: "/".join([*levels, "#"] if tail else levels),
        st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=6),
        st.booleans(),
    ).filter(bool)


@st.composite
def narrowing(draw, pattern: str) -> str:
    """A filter inside `pattern`, or a little beyond it: the interesting borderline cases."""
    out: list[str] = []
    for level in pattern.split("/"):
        roll = draw(st.integers(0, 29))
        if level == "#":
            out.extend(draw(st.lists(st.sampled_from([*LEVELS, "+"]), max_size=2)))
            if draw(st.booleans()):
                out.append("#")
            return "/".join(out) or "#"
        if roll == 0:
            out.append("#")  # widen: cut here
            return "/".join(out)
        if roll == 1:
            out.append("+")  # widen a literal level
        elif level == "+" and roll < 20:
            out.append(draw(st.sampled_from(LEVELS)))
        else:
            out.append(level)
    return "/".join(out)


@st.composite
def filled(draw, topic_filter: str) -> str:
    out: list[str] = []
    for level in topic_filter.split("/"):
        if level == "+":
            out.append(draw(st.sampled_from([*LEVELS, "zz"])))
        elif level == "#":
            out.extend(draw(st.lists(st.sampled_from([*LEVELS, "zz"]), max_size=3)))
        else:
            out.append(level)
    return "/".join(out)


@pytest.mark.parametrize("role", [*sorted(ROLES), "nobody"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_granted_filters_never_deliver_what_may_not_be_received(policy, role, data):
    grants = policy.grants({"role": role, **CLAIMS})
    own = list(grants.subscribe) or ["#"]
    others = ["restaurant/7/#", "restaurant/8/#", "restaurant/+/devices/+/commands", "$SYS/#", "#"]
    topic_filter = data.draw(
        st.one_of(
            st.sampled_from(own).flatmap(narrowing),
            st.sampled_from(own).flatmap(narrowing),
            st.sampled_from(others).flatmap(narrowing),
            random_filter(),
        )
    )
    topic = data.draw(
        st.one_of(
            filled(topic_filter),
            filled(topic_filter),
            st.lists(st.sampled_from(LEVELS), min_size=1, max_size=6).map("/".join),
        )
    )
    if topics.is_valid_topic(topic) and grants.may_subscribe(topic_filter) and topics.matches(topic_filter, topic):
        assert grants.may_receive(topic), (role, topic_filter, topic)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_may_subscribe_its_own_patterns(policy, role):
    grants = policy.grants({"role": role, **CLAIMS})
    assert grants.subscribe
    for pattern in grants.subscribe:
        assert grants.may_subscribe(pattern), pattern


@pytest.mark.parametrize("role", sorted(ROLES))
def test_retained_publishing_is_limited_to_status_or_the_bus(policy, role):
    """Only the bus publishes retained state; devices retain their own presence only."""
    grants = policy.grants({"role": role, **CLAIMS})
    for pattern in grants.retain:
        assert role == "service" or pattern == "restaurant/7/devices/dev-1/status", pattern


# ---------------------------------------------------------------------------------------------
# policy files


def test_from_dict_fills_placeholders():
    policy = Policy.from_dict({"roles": {"r": {"subscribe": ["a/{rid}/{sub}/+"], "publish": ["a/{rid}/x"]}}})
    grants = policy.grants({"role": "r", "rid": 3, "sub": "d"})
    assert grants == Grants(subscribe=("a/3/d/+",), publish=("a/3/x",), retain=())


def test_from_dict_empty_policy_grants_nothing():
    assert Policy.from_dict({}).grants({"role": "admin", "rid": 7}) == Grants()


@pytest.mark.parametrize("pattern", ["restaurant/#/x", "a#", "a+/b", "", "a\x00b", "{rid}+", "{rid}#", 5, None, ["a"]])
@pytest.mark.parametrize("key", ["subscribe", "publish", "retain"])
def test_from_dict_rejects_invalid_patterns(pattern, key):
    with pytest.raises(PolicyError, match="invalid pattern"):
        Policy.from_dict({"roles": {"r": {key: ["ok/{rid}", pattern]}}})


@pytest.mark.parametrize(
    "raw",
    [
        {"roles": {"r": {"subscibe": ["a"]}}},
        {"roles": {"r": {"subscribe": ["a"], "deny": ["b"]}}},
        {"role": {"admin": {"subscribe": ["restaurant/{rid}/#"]}}},  # a typo must not give an empty policy
        {"roles": {}, "extra": 1},
    ],
)
def test_from_dict_rejects_unknown_keys(raw):
    with pytest.raises(PolicyError, match="unknown keys"):
        Policy.from_dict(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # a bare string would otherwise be read as one pattern per character, "#" among them
        {"roles": {"r": {"subscribe": "restaurant/#"}}},
        {"roles": {"r": {"publish": "a"}}},
        {"roles": {"r": {"retain": None}}},
        {"roles": {"r": 5}},
        {"roles": {"r": ["restaurant/#"]}},
        {"roles": ["r"]},
    ],
)
def test_from_dict_rejects_wrong_shapes(raw):
    with pytest.raises(PolicyError):
        Policy.from_dict(raw)


def test_load_reads_a_policy_file(tmp_path: Path):
    path = tmp_path / "acl.toml"
    path.write_text('[roles.kiosk]\nsubscribe = ["restaurant/{rid}/menu"]\n')
    policy = Policy.load(path)
    assert policy.grants({"role": "kiosk", "rid": 2}).may_subscribe("restaurant/2/menu")
    assert not policy.grants({"role": "admin", "rid": 2}).may_subscribe("restaurant/2/menu")


def test_load_missing_file(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "nope.toml")


def test_load_directory(tmp_path: Path):
    with pytest.raises(PolicyError):
        Policy.load(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"[roles.admin\nsubscribe = 1\n",
        b"roles = = 1",
        b"[roles.admin]\nsubscribe = ['a'\n",
        b"\xff\xfe[roles]\n",  # not UTF-8
    ],
)
def test_load_malformed_file(tmp_path: Path, content: bytes):
    path = tmp_path / "acl.toml"
    path.write_bytes(content)
    with pytest.raises(PolicyError):
        Policy.load(path)


def test_load_file_with_invalid_pattern(tmp_path: Path):
    path = tmp_path / "acl.toml"
    path.write_text('[roles.admin]\nsubscribe = ["restaurant/{rid}/#/x"]\n')
    with pytest.raises(PolicyError, match="invalid pattern"):
        Policy.load(path)
