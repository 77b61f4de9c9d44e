"""core.topics, the bus's public contract, checked against the ACL that guards it (config/acl.toml).

The tables below are the intended audience of each topic (the Topics section of the README and
the ACL it points to). A topic added to the scheme without deciding who uses it fails here, and so does a
policy change that lets one more role (or one fewer) publish or read it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import topics as matching
from broker.policy import Grants, Policy
from config import DEFAULT_ACL_POLICY
from core import topics
from core.topics import (
    ADMIN,
    OPS,
    PRINTER,
    SCALE,
    SERVICE,
    STAFF,
    SUPER_ADMIN,
    TABLET,
    Topic,
    TopicError,
)

ROOT = Path(__file__).resolve().parents[2]
RID, OTHER_RID = 7, 8
DEVICE, OTHER_DEVICE = "dev-1", "dev-2"
STATION, OTHER_STATION = "grill", "bar"
EVERY_RESTAURANT = {SUPER_ADMIN}  # reads everything; publishes nothing
DASHBOARDS = {ADMIN, STAFF, *EVERY_RESTAURANT}
DEVICES = {PRINTER, TABLET, SCALE}

KEYS: dict[str, int | str | None] = {
    topics.OPEN_ORDER: 311,
    topics.TICKETS: STATION,
    topics.INVENTORY_ITEM: 12,
    **{template: DEVICE for template in topics.DEVICE_TEMPLATES},
}

# template -> (who may publish it, who may publish it retained, who receives it)
AUDIENCE: dict[str, tuple[set[str], set[str], set[str]]] = {
    topics.ORDERS: ({SERVICE}, {SERVICE}, DASHBOARDS | {TABLET}),
    topics.OPEN_ORDER: ({SERVICE}, {SERVICE}, DASHBOARDS | {TABLET, PRINTER, SERVICE}),  # the bus reads state back
    topics.TICKETS: ({SERVICE}, {SERVICE}, DASHBOARDS | {TABLET, PRINTER}),
    topics.INVENTORY: ({SERVICE}, {SERVICE}, DASHBOARDS),
    topics.LOW_STOCK: ({SERVICE}, {SERVICE}, DASHBOARDS),
    topics.INVENTORY_ITEM: ({SERVICE}, {SERVICE}, DASHBOARDS | {SERVICE}),
    topics.MENU: ({SERVICE}, {SERVICE}, DASHBOARDS),
    topics.CATEGORIES: ({SERVICE}, {SERVICE}, DASHBOARDS),
    topics.NOTIFICATIONS: ({SERVICE}, {SERVICE}, DASHBOARDS),
    topics.COMMANDS: ({SERVICE}, {SERVICE}, DASHBOARDS | DEVICES),
    topics.STATUS: (DEVICES | {SERVICE}, DEVICES | {SERVICE}, DASHBOARDS | {SERVICE}),
    topics.EVENTS: ({PRINTER, TABLET, SERVICE}, {SERVICE}, DASHBOARDS | {SERVICE}),
    topics.READINGS: ({SCALE, SERVICE}, {SERVICE}, DASHBOARDS | {SERVICE}),
}

# the subscription filters the module builds -> who may subscribe with them
FILTERS: dict[str, set[str]] = {
    topics.everything(RID): DASHBOARDS,
    topics.open_orders(RID): DASHBOARDS | {TABLET, PRINTER, SERVICE},
    # what the relay reads back to rebuild the retained state (bridge.retained)
    **{topics.every_restaurant(t): EVERY_RESTAURANT | {SERVICE} for t in (topics.OPEN_ORDER, topics.INVENTORY_ITEM)},
    topics.every_restaurant(topics.STATUS): EVERY_RESTAURANT | {SERVICE},
    topics.all_tickets(RID): DASHBOARDS | {TABLET},
    **{topic_filter: EVERY_RESTAURANT | {SERVICE} for topic_filter in topics.DEVICE_FILTERS},
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(DEFAULT_ACL_POLICY)


def grants(policy: Policy, role: str, rid: int = RID, sub: str = DEVICE, station: str = STATION) -> Grants:
    return policy.grants({"role": role, "rid": rid, "sub": sub, "station": station})


# ---------------------------------------------------------------------------------------------
# names


def test_the_policy_has_exactly_the_known_roles(policy):
    assert set(policy.roles) == topics.ROLES


def test_device_kinds_are_the_device_roles_and_the_registrable_kinds():
    from core.commands import DeviceKind

    assert set(topics.DEVICE_KINDS) == topics.DEVICE_ROLES == DEVICES
    assert typing.get_args(DeviceKind) == topics.DEVICE_KINDS


def test_importing_the_scheme_loads_nothing_else_of_orderbus():
    """Device agents import it: it must stay as cheap as the standard library."""
    packages = ("api", "bridge", "broker", "cli", "config", "core", "devices", "sqlalchemy", "pydantic", "jwt")
    code = f"import sys, core.topics; print(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['core', 'core.topics']"


def test_no_module_spells_a_topic_of_the_scheme_itself():
    """core/topics.py is the one spelling; a literal or pattern starting `restaurant/` elsewhere is a second one."""
    spelled = re.compile(r"""["'^]restaurant/""")  # a string literal, or a regular expression, of a topic
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("api", "bridge", "broker", "cli", "core", "devices", "scripts")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "core" / "topics.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# the scheme against the policy


def test_every_topic_of_the_scheme_has_an_audience():
    assert set(AUDIENCE) == set(topics.TEMPLATES)


@pytest.mark.parametrize("template", topics.TEMPLATES)
def test_exactly_the_intended_roles_publish_and_receive_each_topic(policy, template):
    topic = topics.build(template, RID, KEYS.get(template))
    publishers, retainers, readers = AUDIENCE[template]
    by_role = {role: grants(policy, role) for role in topics.ROLES}
    assert {role for role, g in by_role.items() if g.may_publish(topic)} == publishers
    assert {role for role, g in by_role.items() if g.may_publish(topic, retain=True)} == retainers
    assert {role for role, g in by_role.items() if g.may_receive(topic)} == readers
    assert not by_role[OPS].may_receive(topic)


@pytest.mark.parametrize("template", topics.TEMPLATES)
def test_another_restaurant_neither_reads_nor_writes_it(policy, template):
    topic = topics.build(template, RID, KEYS.get(template))
    for role in topics.ROLES - {SUPER_ADMIN, SERVICE}:  # the two roles that span restaurants
        theirs = grants(policy, role, rid=OTHER_RID)
        assert not theirs.may_receive(topic), (role, topic)
        assert not theirs.may_publish(topic), (role, topic)


@pytest.mark.parametrize("template", topics.DEVICE_TEMPLATES)
def test_another_device_neither_reads_nor_writes_a_devices_own_topics(policy, template):
    topic = topics.build(template, RID, DEVICE)
    for role in DEVICES:
        other = grants(policy, role, sub=OTHER_DEVICE)
        assert not other.may_receive(topic), (role, topic)
        assert not other.may_publish(topic), (role, topic)


def test_a_template_in_every_restaurant_is_a_filter_with_its_key_level_wild():
    assert topics.every_restaurant(topics.OPEN_ORDER) == "restaurant/+/orders/open/+"
    assert topics.every_restaurant(topics.STATUS) == "restaurant/+/devices/+/status"
    assert topics.every_restaurant(topics.ORDERS) == "restaurant/+/orders"
    with pytest.raises(TopicError):
        topics.every_restaurant("orders/closed/{order_id}")


def test_a_printer_reads_its_own_stations_tickets_only(policy):
    printer = grants(policy, PRINTER)
    assert printer.may_receive(topics.tickets(RID, STATION))
    assert not printer.may_receive(topics.tickets(RID, OTHER_STATION))
    assert not printer.may_subscribe(topics.all_tickets(RID))


@pytest.mark.parametrize("topic_filter", FILTERS)
def test_exactly_the_intended_roles_may_subscribe_with_each_filter(policy, topic_filter):
    allowed = {role for role in topics.ROLES if grants(policy, role).may_subscribe(topic_filter)}
    assert allowed == FILTERS[topic_filter]


def test_device_agents_may_subscribe_to_what_they_ask_for(policy):
    from devices.kds_client import subscriptions

    own_commands = topics.device(RID, DEVICE, "commands")
    for topic_filter in [*subscriptions(RID), own_commands]:
        assert grants(policy, TABLET).may_subscribe(topic_filter), topic_filter
    for topic_filter in [topics.tickets(RID, STATION), topics.open_orders(RID), own_commands]:
        assert grants(policy, PRINTER).may_subscribe(topic_filter), topic_filter
    assert grants(policy, SCALE).may_subscribe(own_commands)


# ---------------------------------------------------------------------------------------------
# building and parsing

ids = st.integers(min_value=0, max_value=2**63)
names = st.text(st.characters(blacklist_characters="/+#\x00", blacklist_categories=["Cs"]), min_size=1, max_size=40)


@st.composite
def built(draw: st.DrawFn) -> tuple[str, int, int | str | None]:
    template = draw(st.sampled_from(topics.TEMPLATES))
    key = KEYS.get(template)
    if isinstance(key, int):
        key = draw(ids)
    elif isinstance(key, str):
        key = draw(names)
    return template, draw(ids), key


@given(built())
def test_a_built_topic_parses_back_to_what_built_it(case):
    template, rid, key = case
    topic = topics.build(template, rid, key)
    assert matching.is_valid_topic(topic)
    assert topics.parse(topic) == Topic(rid, template, key)


@given(st.sampled_from(topics.DEVICE_TEMPLATES), ids, names)
def test_a_device_topic_parses_into_restaurant_device_and_leaf(template, rid, device_id):
    leaf = template.rsplit("/", 1)[1]
    topic = topics.device(rid, device_id, leaf)
    assert topics.parse_device(topic) == (rid, device_id, leaf)


@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(
            st.sampled_from(
                [
                    "restaurant",
                    "7",
                    "07",
                    "orders",
                    "open",
                    "x",
                    "devices",
                    "kitchen",
                    "tickets",
                    "status",
                    "inventory",
                    "items",
                    "",
                    "+",
                    "#",
                ]
            ),
            max_size=6,
        ).map("/".join),
    )
)
def test_parse_accepts_only_what_it_would_build_itself(topic):
    try:
        found = topics.parse(topic)
    except TopicError:
        return
    assert topics.build(found.template, found.restaurant_id, found.key) == topic


FOREIGN = [
    "",
    "restaurant",
    "restaurant/7",
    "/restaurant/7/orders",
    "Restaurant/7/orders",
    "restaurant/07/orders",
    "restaurant/-1/orders",
    "restaurant/x/orders",
    "restaurant/\u0667/orders",  # an Arabic-Indic seven is a digit, not a restaurant id
    "restaurant/+/orders",
    "restaurant/7/#",
    "restaurant/7/orders/",
    "restaurant/7/orders/open",
    "restaurant/7/orders/open/x",
    "restaurant/7/orders/open/+",
    "restaurant/7/kitchen/+/tickets",
    "restaurant/7/kitchen//tickets",
    "restaurant/7/inventory/items/1.5",
    "restaurant/7/devices//status",
    "restaurant/7/devices/p1/status/x",
    "restaurant/7/devices/p1/other",
    "restaurant/7/devices/+/status",
    "restaurant/7/nothing",
    "$SYS/broker/load",
]


@pytest.mark.parametrize("topic", FOREIGN)
def test_foreign_topics_are_refused(topic):
    with pytest.raises(TopicError):
        topics.parse(topic)
    with pytest.raises(TopicError):
        topics.parse_device(topic)


@pytest.mark.parametrize("topic", ["restaurant/7/orders", "restaurant/7/kitchen/grill/tickets"])
def test_parse_device_refuses_the_bus_channels(topic):
    with pytest.raises(TopicError):
        topics.parse_device(topic)


def test_parse_device_refuses_leaves_it_was_not_asked_for():
    commands = topics.device(RID, DEVICE, "commands")
    assert topics.parse_device(commands).leaf == "commands"
    with pytest.raises(TopicError):
        topics.parse_device(commands, topics.FROM_DEVICES)


@pytest.mark.parametrize(
    ("template", "rid", "key"),
    [
        (topics.TICKETS, RID, "a/b"),  # would add a level
        (topics.TICKETS, RID, "+"),
        (topics.TICKETS, RID, "#"),
        (topics.TICKETS, RID, ""),
        (topics.TICKETS, RID, "a\x00"),
        (topics.TICKETS, RID, None),  # the station is missing
        (topics.STATUS, RID, 5),  # a device id is a name
        (topics.OPEN_ORDER, RID, "311"),  # an order id is a number
        (topics.OPEN_ORDER, RID, -1),
        (topics.OPEN_ORDER, RID, True),
        (topics.ORDERS, RID, 1),  # no key to fill
        (topics.ORDERS, "7", None),
        (topics.ORDERS, -1, None),
        ("orders/closed", RID, None),  # not a template
    ],
)
def test_builders_refuse_what_would_not_parse_back(template, rid, key):
    with pytest.raises(TopicError):
        topics.build(template, rid, key)


def test_named_builders_refuse_foreign_names():
    with pytest.raises(TopicError):
        topics.channel(RID, "kitchen")
    with pytest.raises(TopicError):
        topics.device(RID, DEVICE, "bogus")
    with pytest.raises(TopicError):
        topics.every_device("commands")  # the bus publishes commands; it does not read them
