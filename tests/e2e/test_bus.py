"""The whole loop on embedded defaults: REST write → outbox → relay → broker → a real MQTT subscriber."""

from __future__ import annotations

import time

import pytest

from tests.support import Stack, Subscriber, add_burger_and_fries, wait_for


@pytest.fixture
def shop(stack: Stack):
    rid = stack.add_restaurant("A", "a@example.com")
    admin = stack.http(stack.api_token("user-a", "admin", rid))
    burger, fries = add_burger_and_fries(admin, rid, stock=5, low_stock=2)
    wait_for(lambda: unpublished(stack) == 0)
    return {"rid": rid, "admin": admin, "burger": burger["id"], "fries": fries["id"]}


def unpublished(stack: Stack) -> int:
    from sqlmodel import Session, col, func, select

    from core.models import OutboxEvent

    with Session(stack.parts.engine) as session:
        return session.exec(select(func.count()).where(col(OutboxEvent.published_at).is_(None))).one()


def dashboard(stack: Stack, subscribers: list[Subscriber], rid: int, name: str = "dash") -> Subscriber:
    subscriber = Subscriber(stack.settings.mqtt_port, name, stack.mqtt_token(name, "admin", rid))
    subscribers.append(subscriber)
    assert subscriber.connect() == 0
    return subscriber


def order(shop: dict, item: str = "fries", quantity: int = 1) -> dict:
    response = shop["admin"].post(
        f"/restaurants/{shop['rid']}/orders", json={"items": [{"menu_item_id": shop[item], "quantity": quantity}]}
    )
    assert response.status_code == 201, response.text
    return response.json()


def latest_seq(stack: Stack, shop: dict) -> int:
    return shop["admin"].get(f"/restaurants/{shop['rid']}/events", params={"after": 0, "limit": 1000}).json()[-1]["seq"]


def test_a_posted_order_reaches_a_subscriber_as_new_order_with_its_seq(stack: Stack, subscribers, shop):
    rid = shop["rid"]
    watcher = dashboard(stack, subscribers, rid)
    assert watcher.subscribe(f"restaurant/{rid}/orders") == 1
    seq_before = latest_seq(stack, shop)
    placed = order(shop)
    [message] = watcher.collect(1)
    event = message.json()
    assert message.topic == f"restaurant/{rid}/orders"
    assert event["type"] == "new_order"
    assert event["seq"] == seq_before + 1
    assert event["data"]["order"]["id"] == placed["id"]
    assert event["restaurant_id"] == rid and event["v"] == 1


def test_a_late_subscriber_gets_the_open_orders_and_stock_from_retained_topics(stack: Stack, subscribers, shop):
    rid = shop["rid"]
    first = order(shop, "burger", 2)
    done = order(shop)
    for status in ("preparing", "ready", "completed"):
        shop["admin"].post(f"/restaurants/{rid}/orders/{done['id']}/status", json={"status": status})
    wait_for(lambda: unpublished(stack) == 0)

    late = dashboard(stack, subscribers, rid, "late")
    late.subscribe(f"restaurant/{rid}/orders/open/+")
    late.subscribe(f"restaurant/{rid}/inventory/items/+")
    retained = {m.topic: m for m in late.drain(quiet=0.5)}
    assert set(retained) == {
        f"restaurant/{rid}/orders/open/{first['id']}",
        f"restaurant/{rid}/inventory/items/{shop['burger']}",
    }, "the completed order's retained state must be cleared"
    assert all(m.retain for m in retained.values())
    assert retained[f"restaurant/{rid}/orders/open/{first['id']}"].json()["data"]["order"]["status"] == "pending"
    stock = retained[f"restaurant/{rid}/inventory/items/{shop['burger']}"].json()["data"]["item"]
    assert stock["available_quantity"] == 3


def test_low_stock_alert_reaches_its_topic_once(stack: Stack, subscribers, shop):
    rid = shop["rid"]
    watcher = dashboard(stack, subscribers, rid)
    watcher.subscribe(f"restaurant/{rid}/inventory/low_stock")
    order(shop, "burger", 2)  # 5 -> 3, above the threshold of 2
    order(shop, "burger", 2)  # 3 -> 1: alert
    order(shop, "burger", 1)  # 1 -> 0: still low, no second alert
    [alert] = watcher.collect(1)
    assert alert.json()["type"] == "low_stock"
    assert alert.json()["data"]["available_quantity"] == 1
    wait_for(lambda: unpublished(stack) == 0)
    assert watcher.drain() == []


def test_nothing_is_lost_while_the_broker_is_down(stack: Stack, subscribers, shop):
    """Orders keep coming with the broker stopped; on its return each event arrives once, in order.

    The consumer does what every dashboard does: live events, plus catch-up by seq for any gap.
    """
    rid = shop["rid"]
    start_seq = latest_seq(stack, shop)
    watcher = dashboard(stack, subscribers, rid)
    watcher.subscribe(f"restaurant/{rid}/#")
    watcher.drain(quiet=0.5)  # retained state

    before = [order(shop) for _ in range(5)]
    # Delivered and acknowledged before the stop: a QoS 1 message caught in flight by the stop may
    # rightly arrive twice (resent by the relay, or by the broker to the watcher [MQTT-4.4.0-1]), which
    # is what the dashboard's dedup by event id is for. What this test holds is stricter: what waited in
    # the outbox while the broker was down arrives once. (CI once saw 41 of 40 with no such wait.)
    wait_for(lambda: unpublished(stack) == 0)
    received = watcher.drain(quiet=0.5)
    stack.stop_broker()
    during = [order(shop) for _ in range(10)]  # writes succeed with the broker gone
    assert unpublished(stack) >= 10
    time.sleep(0.5)
    stack.start_broker()
    watcher.connack.get(timeout=30)  # reconnected by itself (a NATS node takes seconds to rejoin)
    watcher.subscribe(f"restaurant/{rid}/#")
    after = [order(shop) for _ in range(5)]
    wait_for(lambda: unpublished(stack) == 0, timeout=20)
    end_seq = latest_seq(stack, shop)

    # state topics (open orders, item stock) repeat their event's envelope: count channel topics only
    received += watcher.drain(quiet=1.0)
    channels = [m for m in received if "/open/" not in m.topic and "/items/" not in m.topic]
    live = [m.json() for m in channels]
    live_ids = [event["id"] for event in live]
    assert len(live_ids) == len(set(live_ids)), "an event was published twice"
    seen = {event["seq"]: event for event in live}
    gaps = [seq for seq in range(start_seq + 1, end_seq + 1) if seq not in seen]
    if gaps:
        caught_up = shop["admin"].get(f"/restaurants/{rid}/events", params={"after": gaps[0] - 1, "limit": 1000}).json()
        seen |= {event["seq"]: event for event in caught_up if event["seq"] in gaps}
    assert sorted(seen) == list(range(start_seq + 1, end_seq + 1))
    orders_seen = [event["data"]["order"]["id"] for _, event in sorted(seen.items()) if event["type"] == "new_order"]
    assert orders_seen == [o["id"] for o in before + during + after]
    live_seqs = [event["seq"] for event in live]
    assert live_seqs == sorted(live_seqs), "live events arrived out of order"


def test_the_relay_publishes_each_event_exactly_once_across_a_broker_restart(stack: Stack, shop):
    """Counted at the source: every outbox row is stamped published, none twice, seq without gaps."""
    from sqlmodel import Session, col, select

    from core.models import OutboxEvent

    stack.stop_broker()
    for _ in range(10):
        order(shop)
    stack.start_broker()
    wait_for(lambda: unpublished(stack) == 0, timeout=20)
    with Session(stack.parts.engine) as session:
        seqs = session.exec(
            select(OutboxEvent.seq).where(OutboxEvent.restaurant_id == shop["rid"]).order_by(col(OutboxEvent.seq))
        ).all()
    assert list(seqs) == list(range(1, len(seqs) + 1))
