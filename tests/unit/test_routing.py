"""bridge.routing: one committed event envelope → the MQTT publications of the relay."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from bridge.routing import CHANNEL_TOPICS, Publication, encode, publications
from broker import topics
from broker.policy import Policy
from config import DEFAULT_ACL_POLICY
from core.topics import ROLES

RID = 7


def envelope(kind: str, data: dict[str, Any], seq: int = 1042, rid: int = RID) -> dict[str, Any]:
    return {
        "v": 1,
        "id": str(uuid.uuid4()),
        "seq": seq,
        "type": kind,
        "restaurant_id": rid,
        "ts": "2026-11-28T19:42:00.123Z",
        "data": data,
    }


def order(status: str, order_id: int = 311) -> dict[str, Any]:
    return {"id": order_id, "status": status, "version": 1, "items": []}


def item(item_id: int = 42) -> dict[str, Any]:
    return {"id": item_id, "name": "Fries", "stock_quantity": 10, "damaged_quantity": 0, "available_quantity": 10}


def test_encode_is_compact_json():
    env = envelope("new_order", {"order": order("pending")})
    payload = encode(env)
    assert isinstance(payload, bytes)
    assert json.loads(payload) == env
    assert b" " not in encode({"a": [1, 2], "b": {"c": None}})


def test_new_order():
    env = envelope("new_order", {"order": order("pending")})
    pubs = publications(env)
    assert [(p.topic, p.retain) for p in pubs] == [
        ("restaurant/7/orders", False),
        ("restaurant/7/orders/open/311", True),
    ]
    assert all(json.loads(p.payload) == env for p in pubs)
    assert pubs[0].payload == pubs[1].payload == encode(env)


@pytest.mark.parametrize("status", ["pending", "preparing", "ready"])
def test_order_updated_while_open_sets_the_retained_order(status):
    env = envelope("order_updated", {"order": order(status), "change": "status"})
    channel, state = publications(env)
    assert channel == Publication("restaurant/7/orders", encode(env), retain=False)
    assert state == Publication("restaurant/7/orders/open/311", encode(env), retain=True)


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_order_closing_clears_the_retained_order(status):
    env = envelope("order_updated", {"order": order(status), "change": "status"})
    channel, state = publications(env)
    assert channel.topic == "restaurant/7/orders"
    assert not channel.retain
    assert json.loads(channel.payload) == env  # the event itself still goes out
    assert state == Publication("restaurant/7/orders/open/311", b"", retain=True)


def test_refund_of_a_closed_order_keeps_it_cleared():
    env = envelope("order_updated", {"order": order("completed"), "change": "refund", "refund": {"amount_cents": 5}})
    assert publications(env)[1] == Publication("restaurant/7/orders/open/311", b"", retain=True)


def test_inventory_updated_sets_the_retained_item():
    env = envelope("inventory_updated", {"item": item(42), "reason": "adjusted"})
    pubs = publications(env)
    assert pubs == [
        Publication("restaurant/7/inventory", encode(env)),
        Publication("restaurant/7/inventory/items/42", encode(env), retain=True),
    ]


def test_low_stock():
    env = envelope("low_stock", {"item": item(42), "available_quantity": 2, "low_stock_threshold": 3})
    pubs = publications(env)
    assert pubs == [Publication("restaurant/7/inventory/low_stock", encode(env))]
    assert json.loads(pubs[0].payload)["data"]["available_quantity"] == 2


def test_deleting_a_menu_item_clears_its_retained_stock():
    env = envelope("menu_updated", {"action": "deleted", "menu_item": item(42)})
    assert publications(env) == [
        Publication("restaurant/7/menu", encode(env)),
        Publication("restaurant/7/inventory/items/42", b"", retain=True),
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"action": "created", "menu_item": item(42)},
        {"action": "updated", "menu_item": item(42)},
        {"action": "deleted", "menu": {"id": 3, "name": "Lunch"}},  # a whole menu, not an item
        {"action": "updated", "menu": {"id": 3, "name": "Lunch"}},
    ],
)
def test_other_menu_events_touch_no_retained_topic(data):
    env = envelope("menu_updated", data)
    assert publications(env) == [Publication("restaurant/7/menu", encode(env))]


@pytest.mark.parametrize("action", ["created", "updated", "deleted"])
def test_category_updated(action):
    env = envelope("category_updated", {"action": action, "category": {"id": 1, "name": "Mains", "station": "grill"}})
    assert publications(env) == [Publication("restaurant/7/categories", encode(env))]


def test_notification():
    env = envelope("notification", {"notification": {"id": 9, "kind": "low_stock", "title": "Low stock: Fries"}})
    assert publications(env) == [Publication("restaurant/7/notifications", encode(env))]


def test_notification_updated_goes_where_notifications_go():
    env = envelope("notification_updated", {"action": "dismissed", "ids": [9], "at": "2026-03-04T05:06:07.890Z"})
    assert publications(env) == [Publication("restaurant/7/notifications", encode(env))]


def test_restaurant_id_selects_the_topic_tree():
    env = envelope("new_order", {"order": order("pending", 5)}, rid=8)
    assert [p.topic for p in publications(env)] == ["restaurant/8/orders", "restaurant/8/orders/open/5"]


SAMPLES = [
    envelope("new_order", {"order": order("pending")}),
    envelope("order_updated", {"order": order("ready")}),
    envelope("order_updated", {"order": order("cancelled")}),
    envelope("inventory_updated", {"item": item()}),
    envelope("low_stock", {"item": item(), "available_quantity": 0, "low_stock_threshold": 1}),
    envelope("menu_updated", {"action": "deleted", "menu_item": item()}),
    envelope("category_updated", {"action": "created", "category": {"id": 1}}),
    envelope("notification", {"notification": {"id": 1}}),
    envelope("notification_updated", {"action": "read", "ids": [1], "at": "2026-03-04T05:06:07.890Z"}),
]


def test_every_channel_is_exercised():
    assert {env["type"] for env in SAMPLES} == set(CHANNEL_TOPICS)


@pytest.mark.parametrize("env", SAMPLES, ids=[env["type"] for env in SAMPLES])
def test_the_bus_may_publish_what_it_routes(env):
    """Every publication is a valid topic the service token may publish (retained included)."""
    policy = Policy.load(DEFAULT_ACL_POLICY)
    service = policy.grants({"role": "service", "sub": "relay"})
    for pub in publications(env):
        assert topics.is_valid_topic(pub.topic)
        assert service.may_publish(pub.topic, retain=pub.retain), pub


@pytest.mark.parametrize("env", SAMPLES, ids=[env["type"] for env in SAMPLES])
def test_dashboards_of_that_restaurant_only_receive_it(env):
    policy = Policy.load(DEFAULT_ACL_POLICY)
    own = policy.grants({"role": "admin", "rid": RID, "sub": "user-1"})
    other = policy.grants({"role": "admin", "rid": 8, "sub": "user-2"})
    for pub in publications(env):
        assert own.may_receive(pub.topic)
        assert not other.may_receive(pub.topic)


def test_only_the_bus_may_publish_the_state_topics():
    policy = Policy.load(DEFAULT_ACL_POLICY)
    for role in sorted(ROLES - {"service"}):
        grants = policy.grants({"role": role, "rid": RID, "sub": "dev-1", "station": "grill"})
        for env in SAMPLES:
            for pub in publications(env):
                assert not grants.may_publish(pub.topic, retain=pub.retain), (role, pub.topic)
