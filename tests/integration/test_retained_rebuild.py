"""Retained state is a projection of the database: after any part restarts, a new subscriber gets the
open orders, the stock and the last known presence, and never an older state after a newer one.

Real broker (restarted in the test's loop), real SQLite, the real relay; `orderbus bridge` as a
subprocess where the relay runs apart."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqtt.broker import RetainedApplicationMessage
from sqlmodel import Session, col, func, select

from broker.store import journal_path
from cli.runtime import Runtime
from core.commands import OrderIn, OrderItemIn
from core.domain import OrderStatus
from core.models import OutboxEvent
from core.services import devices
from core.services import orders as order_service
from core.unit_of_work import UnitOfWork
from tests.support import Received, Stack, Subscriber, wait_for

ORDERBUS = str(Path(sys.executable).parent / "orderbus")


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.close()


def unpublished(stack: Stack) -> int:
    with Session(stack.engine) as session:
        return session.exec(select(func.count()).where(col(OutboxEvent.published_at).is_(None))).one()


def shop(stack: Stack) -> dict[str, int]:
    rid = stack.add_restaurant("A", f"a{time.monotonic_ns()}@example.com")
    burger = stack.add_menu_item(rid, "Burger", enable_stock_tracking=True, stock_quantity=50)
    fries = stack.add_menu_item(rid, "Fries")
    return {"rid": rid, "burger": burger, "fries": fries}


def place(stack: Stack, where: dict[str, int], count: int = 1, item: str = "burger") -> list[int]:
    """Orders through the service layer, one unit of work, as any writer of the database would."""
    wake = stack.runtime.wake_relay
    with UnitOfWork(stack.engine, wake) as uow:
        placed = [
            order_service.place_order(
                uow, where["rid"], OrderIn(items=[OrderItemIn(menu_item_id=where[item], quantity=1)])
            ).order.id
            for _ in range(count)
        ]
        uow.commit()
    return [order_id for order_id in placed if order_id is not None]


def move(stack: Stack, rid: int, order_id: int, status: OrderStatus) -> None:
    with UnitOfWork(stack.engine, stack.runtime.wake_relay) as uow:
        order_service.change_status(uow, rid, order_id, status)
        uow.commit()


def stop_broker(stack: Stack) -> None:
    stack.call(stack.runtime.stop_broker())


def start_broker(stack: Stack, stale: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """`stale`: what the broker comes back holding (an old copy of its retained store), set before
    any client can connect: the loop runs nothing else in between. Returns the retained messages the
    broker started with (from its store, and `stale`)."""

    async def start() -> dict[str, bytes]:
        await stack.runtime.start_broker()
        assert stack.runtime.broker is not None
        for topic, payload in (stale or {}).items():
            stack.runtime.broker._retained_messages[topic] = RetainedApplicationMessage(None, topic, payload, 1)
        return {topic: bytes(m.data) for topic, m in stack.runtime.broker._retained_messages.items()}

    return stack.call(start())


def restart_broker(stack: Stack, *, lost: bool = False) -> None:
    """`lost`: the broker's store is lost too, so it comes back with no retained state at all. On NATS
    the node the bus connects to is killed (-9) and restarted: its replicated streams survive."""
    if stack.on_nats and not lost:
        stack.stop_broker()
        stack.start_broker()
        return
    stop_broker(stack)
    if lost:
        stack.forget_broker_state()
    start_broker(stack)


def state(stack: Stack, subscribers: list[Subscriber], rid: int, quiet: float = 1.0) -> dict[str, Received]:
    """What a new dashboard of the restaurant gets from the retained state topics."""
    name = f"late-{len(subscribers)}-{time.monotonic_ns()}"
    late = Subscriber(stack.settings.mqtt_port, name, stack.mqtt_token(name, "admin", rid))
    subscribers.append(late)
    assert late.connect() == 0
    for topic_filter in (f"restaurant/{rid}/orders/open/+", f"restaurant/{rid}/inventory/items/+"):
        assert late.subscribe(topic_filter) == 1
    for topic_filter in (f"restaurant/{rid}/devices/+/status",):
        assert late.subscribe(topic_filter) == 1
    got = {m.topic: m for m in late.drain(quiet=quiet)}  # the last of each: a rebuild may be under way
    late.close()
    return {topic: m for topic, m in got.items() if m.payload}


def settled(stack: Stack) -> None:
    wait_for(lambda: unpublished(stack) == 0, timeout=30)


def latest_envelopes(stack: Stack, rid: int) -> dict[str, dict[str, Any]]:
    """The state topics the database says a broker should hold, from the last event of each."""
    with Session(stack.engine) as session:
        rows = session.exec(
            select(OutboxEvent.envelope).where(OutboxEvent.restaurant_id == rid).order_by(col(OutboxEvent.id))
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for envelope in rows:
        data = envelope["data"]
        if envelope["type"] in ("new_order", "order_updated"):
            order = data["order"]
            topic = f"restaurant/{rid}/orders/open/{order['id']}"
            if order["status"] in ("pending", "preparing", "ready"):
                found[topic] = dict(envelope)
            else:
                found.pop(topic, None)
        elif envelope["type"] == "inventory_updated":
            found[f"restaurant/{rid}/inventory/items/{data['item']['id']}"] = dict(envelope)
    return found


def assert_projection(stack: Stack, subscribers: list[Subscriber], rid: int) -> dict[str, Received]:
    expected = latest_envelopes(stack, rid)
    got = state(stack, subscribers, rid)
    assert all(m.retain for m in got.values()), "a settled broker hands every state out as retained"
    state_topics = {topic: m.json() for topic, m in got.items() if "/devices/" not in topic}
    assert state_topics == expected
    return got


@pytest.mark.embedded_only(
    "it wipes the embedded broker's store; on NATS the retained messages live in the replicated $MQTT_rmsgs "
    "stream, which a node's kill -9 and restart keeps and no bus login may delete"
)
def test_a_broker_restart_alone_gives_a_new_subscriber_every_open_order_and_the_stock(stack: Stack, subscribers):
    where = shop(stack)
    rid = where["rid"]
    open_ids = place(stack, where, 3)
    [closed] = place(stack, where, 1, "fries")
    for status in (OrderStatus.PREPARING, OrderStatus.READY, OrderStatus.COMPLETED):
        move(stack, rid, closed, status)
    move(stack, rid, open_ids[0], OrderStatus.PREPARING)
    settled(stack)

    restart_broker(stack, lost=True)
    got = wait_for(lambda: (s := state(stack, subscribers, rid, 0.3)) and len(s) == 4 and s, timeout=15)
    assert set(got) == {f"restaurant/{rid}/orders/open/{i}" for i in open_ids} | {
        f"restaurant/{rid}/inventory/items/{where['burger']}"
    }
    assert_projection(stack, subscribers, rid)
    first = got[f"restaurant/{rid}/orders/open/{open_ids[0]}"].json()
    assert first["data"]["order"]["status"] == "preparing"
    stock = got[f"restaurant/{rid}/inventory/items/{where['burger']}"].json()["data"]["item"]
    assert stock["available_quantity"] == 47


@pytest.mark.embedded_only(
    "it plants stale retained messages in the embedded broker's memory; its NATS form (a stray retained order "
    "the broker holds and the database never had, the node killed -9 and restarted) is "
    "test_a_stale_retained_order_held_by_the_broker_is_cleared_by_the_rebuild_after_a_restart"
)
def test_a_state_the_database_no_longer_has_is_cleared_when_the_broker_returns_with_it(stack: Stack, subscribers):
    """A broker that comes back with an old copy of its store: an order closed while it was down, a
    deleted item, an order of an older state; each is set right before new events go out."""
    where = shop(stack)
    rid = where["rid"]
    kept, closed = place(stack, where, 2)
    settled(stack)
    old_kept = latest_envelopes(stack, rid)[f"restaurant/{rid}/orders/open/{kept}"]
    old_closed = latest_envelopes(stack, rid)[f"restaurant/{rid}/orders/open/{closed}"]

    stop_broker(stack)
    move(stack, rid, kept, OrderStatus.PREPARING)
    move(stack, rid, closed, OrderStatus.CANCELLED)
    stale = {
        f"restaurant/{rid}/orders/open/{kept}": json.dumps(old_kept).encode(),
        f"restaurant/{rid}/orders/open/{closed}": json.dumps(old_closed).encode(),
        f"restaurant/{rid}/orders/open/999999": json.dumps(old_closed).encode(),
        f"restaurant/{rid}/inventory/items/888888": b'{"type": "inventory_updated"}',
    }

    start_broker(stack, stale)
    settled(stack)
    got = assert_projection(stack, subscribers, rid)
    assert f"restaurant/{rid}/orders/open/{closed}" not in got
    assert got[f"restaurant/{rid}/orders/open/{kept}"].json()["data"]["order"]["status"] == "preparing"


@pytest.mark.embedded_only(
    "it restores a backup of the embedded broker's sqlite store; on NATS that is a JetStream restore of "
    "$MQTT_rmsgs on every node, no crash a node restart makes"
)
def test_a_broker_brought_back_with_an_old_copy_of_its_store_is_set_right(stack: Stack, subscribers, tmp_path):
    """The broker's own store (`broker.sqlite3`) restored from a backup taken before an order moved on
    and another was cancelled: the broker starts with those stale retained states, and the relay's
    rebuild replaces the one and clears the other before anything else goes out."""
    where = shop(stack)
    rid = where["rid"]
    kept, closed = place(stack, where, 2)
    settled(stack)
    store = journal_path(stack.settings.data_dir)
    stop_broker(stack)
    backup = tmp_path / "broker-backup.sqlite3"
    with contextlib.closing(sqlite3.connect(store)) as live, contextlib.closing(sqlite3.connect(backup)) as copy:
        live.backup(copy)
    start_broker(stack)
    move(stack, rid, kept, OrderStatus.PREPARING)
    move(stack, rid, closed, OrderStatus.CANCELLED)
    settled(stack)

    stop_broker(stack)
    stack.forget_broker_state()
    shutil.copyfile(backup, store)
    held = start_broker(stack)
    kept_topic, closed_topic = f"restaurant/{rid}/orders/open/{kept}", f"restaurant/{rid}/orders/open/{closed}"
    assert json.loads(held[kept_topic])["data"]["order"]["status"] == "pending", "the stale copy was loaded"
    assert closed_topic in held

    def set_right() -> bool:
        got = state(stack, subscribers, rid, 0.3)
        return closed_topic not in got and got[kept_topic].json()["data"]["order"]["status"] == "preparing"

    wait_for(set_right, timeout=20)
    assert_projection(stack, subscribers, rid)


def test_the_whole_process_restarted_on_the_same_data_brings_the_state_back(tmp_path, subscribers):
    first = Stack(tmp_path / "data").start()
    try:
        where = shop(first)
        place(first, where, 2)
        settled(first)
    finally:
        first.stop()
    second = Stack(tmp_path / "data").start()
    try:
        rid = where["rid"]
        wait_for(lambda: len(state(second, subscribers, rid, 0.3)) == 3, timeout=15)
        assert_projection(second, subscribers, rid)
    finally:
        second.stop()


@pytest.fixture
def split(tmp_path) -> Iterator[Stack]:
    """Broker and API in the test's process; the relay and ingest are `orderbus bridge`, started by the test."""
    stack = Stack(tmp_path / "data")
    stack.runtime = Runtime(stack.parts, bridge=False)
    stack.start()
    yield stack
    stack.stop()


def start_bridge(stack: Stack) -> subprocess.Popen[bytes]:
    args = [
        ORDERBUS,
        "bridge",
        "--data-dir",
        str(stack.settings.data_dir),
        "--mqtt-port",
        str(stack.settings.mqtt_port),
    ]
    log = (stack.settings.data_dir.parent / f"bridge-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONPATH": os.getcwd()})


def test_the_relay_killed_and_restarted_alone_brings_the_state_back(split: Stack, subscribers):
    where = shop(split)
    rid = where["rid"]
    bridge = start_bridge(split)
    try:
        place(split, where, 2)
        settled(split)
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
        restart_broker(split, lost=True)  # the broker's state is gone, and no relay is there to rebuild it
        assert state(split, subscribers, rid, 0.3) == {}
        bridge = start_bridge(split)
        wait_for(lambda: len(state(split, subscribers, rid, 0.3)) == 3, timeout=20)
        assert_projection(split, subscribers, rid)
    finally:
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)


def test_an_order_updated_right_after_the_reconnect_never_shows_an_older_state_last(split: Stack, subscribers):
    """Events published before the relay went away are the rebuilt state; the ones committed while it
    was away, and right after it is back, follow in seq order: on every state topic seq only grows."""
    where = shop(split)
    rid = where["rid"]
    bridge = start_bridge(split)
    try:
        ids = place(split, where, 5)
        settled(split)
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
        restart_broker(split)
        for order_id in ids:
            move(split, rid, order_id, OrderStatus.PREPARING)  # unpublished, newer than the broker's state
        watcher = Subscriber(split.settings.mqtt_port, "watcher", split.mqtt_token("watcher", "admin", rid))
        subscribers.append(watcher)
        assert watcher.connect() == 0
        assert watcher.subscribe(f"restaurant/{rid}/orders/open/+") == 1
        assert watcher.subscribe(f"restaurant/{rid}/inventory/items/+") == 1
        bridge = start_bridge(split)
        for order_id in ids:  # while the relay reconnects and rebuilds
            move(split, rid, order_id, OrderStatus.READY)
            time.sleep(0.1)
        settled(split)
        seen: dict[str, list[int]] = {}
        for message in watcher.drain(quiet=1.0):
            if message.payload:
                seen.setdefault(message.topic, []).append(message.json()["seq"])
        for topic, seqs in seen.items():
            assert seqs == sorted(seqs), (topic, seqs)
        assert set(seen) == {f"restaurant/{rid}/orders/open/{i}" for i in ids} | {
            f"restaurant/{rid}/inventory/items/{where['burger']}"
        }
        final = assert_projection(split, subscribers, rid)
        assert {final[f"restaurant/{rid}/orders/open/{i}"].json()["data"]["order"]["status"] for i in ids} == {"ready"}
    finally:
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)


def test_presence_the_broker_lost_is_restored_as_last_known_for_offline_and_lost_devices(stack: Stack, subscribers):
    where = shop(stack)
    rid = where["rid"]
    stack.add_device(rid, "printer-1", "printer", station="grill")
    stack.add_device(rid, "tablet-1", "tablet")
    stack.add_device(rid, "scale-1", "scale")
    with UnitOfWork(stack.engine) as uow:
        for device_id, presence in (("printer-1", "lost"), ("tablet-1", "offline"), ("scale-1", "online")):
            devices.record_presence(uow, devices.get_device(uow, rid, device_id), presence, f"boot-{device_id}")
        uow.commit()
    seen_before = {d: stack.device(d).last_seen for d in ("printer-1", "tablet-1")}
    settled(stack)
    restart_broker(stack)
    got = wait_for(lambda: (s := state(stack, subscribers, rid, 0.3)) and len(s) == 3 and s, timeout=15)
    status = {topic.split("/")[3]: m.json() for topic, m in got.items() if "/devices/" in topic}
    assert status == {
        "printer-1": {"state": "lost", "boot_id": "boot-printer-1", "kind": "printer", "restored": True},
        "tablet-1": {"state": "offline", "boot_id": "boot-tablet-1", "kind": "tablet", "restored": True},
    }, "an online device says so itself when it reconnects, with a new boot id"
    time.sleep(0.5)
    assert {d: stack.device(d).last_seen for d in ("printer-1", "tablet-1")} == seen_before, (
        "a restored presence is not a message from the device"
    )


def test_a_retained_message_the_broker_refuses_during_the_rebuild_is_dropped_and_the_rest_goes_on(
    tmp_path, subscribers
):
    """An ACL that lets the bus retain open orders but not stock: the rebuild and the outbox go on."""
    default = (Path(__file__).parents[2] / "config" / "acl.toml").read_text()
    policy = tmp_path / "acl.toml"
    policy.write_text(
        default.replace(
            'retain = ["restaurant/#"]',
            'retain = ["restaurant/+/orders/open/+", "restaurant/+/devices/+/status"]',
        )
    )
    stack = Stack(tmp_path / "data", acl_policy=policy).start()
    try:
        where = shop(stack)
        rid = where["rid"]
        ids = place(stack, where, 2)
        settled(stack)
        restart_broker(stack)
        more = place(stack, where, 1)
        settled(stack)
        got = state(stack, subscribers, rid)
        assert set(got) == {f"restaurant/{rid}/orders/open/{i}" for i in ids + more}
    finally:
        stack.stop()


def test_a_rebuild_cut_off_by_another_disconnect_runs_again_on_the_next_connect(stack: Stack, subscribers):
    where = shop(stack)
    rid = where["rid"]
    for _ in range(4):
        place(stack, where, 50, "fries")
    settled(stack)
    restart_broker(stack)
    watcher = Subscriber(stack.settings.mqtt_port, "watcher", stack.mqtt_token("watcher", "admin", rid))
    subscribers.append(watcher)
    wait_for(lambda: watcher.connect() == 0, timeout=10)
    assert watcher.subscribe(f"restaurant/{rid}/orders/open/+") == 1
    watcher.collect(1, timeout=15)  # the rebuild has begun
    restart_broker(stack)  # and is cut off
    place(stack, where, 1, "fries")
    settled(stack)
    wait_for(lambda: len(state(stack, subscribers, rid, 0.5)) == 202, timeout=30)
    assert_projection(stack, subscribers, rid)


def test_a_broker_that_will_not_let_the_relay_read_its_state_still_gets_it_republished(tmp_path, subscribers):
    """An ACL of an older deployment, without the service's grant to read the state topics back:
    nothing can be cleared, but the open orders come back and the outbox goes on."""
    default = (Path(__file__).parents[2] / "config" / "acl.toml").read_text()
    policy = tmp_path / "acl.toml"
    policy.write_text(default.replace('    "restaurant/+/orders/open/+",\n    "restaurant/+/inventory/items/+",\n', ""))
    assert policy.read_text() != default
    stack = Stack(tmp_path / "data", acl_policy=policy).start()
    try:
        where = shop(stack)
        rid = where["rid"]
        place(stack, where, 2)
        settled(stack)
        stop_broker(stack)
        start_broker(stack, {f"restaurant/{rid}/orders/open/999999": b'{"type": "new_order"}'})
        place(stack, where, 1)
        settled(stack)
        got = state(stack, subscribers, rid)
        expected = set(latest_envelopes(stack, rid)) | {f"restaurant/{rid}/orders/open/999999"}
        assert set(got) == expected, "republished all the same; the unknown stale topic stays"
    finally:
        stack.stop()


@pytest.mark.embedded_only(
    "it plants stale retained messages in the embedded broker's memory while it is down, and it checks the order "
    "of messages across two subscriptions: on NATS each QoS 1 subscription is a JetStream consumer of its own, "
    "so two filters' messages are not ordered with each other (only each topic's [MQTT-4.6.0-6])"
)
def test_events_written_while_the_broker_was_away_go_out_after_the_rebuild(stack: Stack, subscribers):
    """The relay hands paho nothing while it is disconnected: paho would queue it and send it first
    thing at the next CONNACK, and a screen would get the new event before the rebuild had cleared the
    stale state the broker came back with. A persistent subscriber, away during the restart, gets what
    the broker sent in the order it was sent [MQTT-4.6.0-6]: the rebuild's clear before the new events."""
    where = shop(stack)
    rid = where["rid"]
    kept, closed = place(stack, where, 2)
    settled(stack)
    token = stack.mqtt_token("watcher", "admin", rid)
    watcher = Subscriber(stack.settings.mqtt_port, "watcher", token, clean_session=False)
    subscribers.append(watcher)
    assert watcher.connect() == 0
    assert watcher.subscribe(f"restaurant/{rid}/orders") == 1
    assert watcher.subscribe(f"restaurant/{rid}/orders/open/+") == 1
    watcher.drain()
    watcher.close()

    stop_broker(stack)
    move(stack, rid, kept, OrderStatus.PREPARING)
    move(stack, rid, closed, OrderStatus.CANCELLED)
    gone = f"restaurant/{rid}/orders/open/999999"
    start_broker(stack, {gone: b'{"type": "new_order"}'})
    settled(stack)

    back = Subscriber(stack.settings.mqtt_port, "watcher", token, clean_session=False)
    subscribers.append(back)
    assert back.connect() == 0
    got = back.drain(quiet=1.0)
    topics_in_order = [m.topic for m in got]
    assert (gone, b"") in [(m.topic, m.payload) for m in got], "the rebuild cleared the state no order has"
    first_event = topics_in_order.index(f"restaurant/{rid}/orders")
    assert topics_in_order.index(gone) < first_event, topics_in_order


def test_a_stale_retained_order_held_by_the_broker_is_cleared_by_the_rebuild_after_a_restart(
    stack: Stack, subscribers, caplog
):
    """Step 1 of the rebuild (bridge/retained.py) learns what the broker holds. On both engines a retained
    open order the database never had (a stray publish) is cleared once the relay reconnects: an empty
    retained payload removes it, and no later subscriber gets it [MQTT-3.3.1-10].
    Embedded: the broker restarts on its store, and the relay subscribes and unsubscribes (every retained
    message comes before the UNSUBACK). NATS: the relay's node is killed (-9) and restarted; the message
    lives on in the replicated $MQTT_rmsgs stream, but the node answers MQTT before it has loaded its
    retained messages from it, so the relay reads the stream itself (bridge/nats_retained.py)."""
    where = shop(stack)
    rid = where["rid"]
    open_ids = place(stack, where, 1)
    settled(stack)
    stray = Subscriber(stack.settings.mqtt_port, "stray-service", stack.mqtt_token("stray-service", "service", None))
    subscribers.append(stray)
    assert stray.connect() == 0
    ghost = f"restaurant/{rid}/orders/open/999999"
    stray.client.publish(ghost, json.dumps({"type": "new_order", "data": {}}), qos=1, retain=True).wait_for_publish(10)
    stray.close()
    wait_for(lambda: ghost in state(stack, subscribers, rid, 0.3))  # the broker holds it

    restart_broker(stack)
    got = wait_for(lambda: (s := state(stack, subscribers, rid, 0.3)) and ghost not in s and s, timeout=20)
    assert set(got) == {
        f"restaurant/{rid}/orders/open/{open_ids[0]}",
        f"restaurant/{rid}/inventory/items/{where['burger']}",
    }
    assert_projection(stack, subscribers, rid)
    assert "reading it over MQTT" not in caplog.text, "on NATS the rebuild read the stream, not a SUBSCRIBE"
