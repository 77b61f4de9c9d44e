"""KDS tablets change orders through the bus: real broker, real ingest, real SQLite, real MQTT clients."""

from __future__ import annotations

import json
import time
from typing import Any

from devices.kds_board import Board
from devices.kds_client import KdsClient
from tests.integration.kitchen import Kitchen, Tablet, acl_denied_publishes, open_kitchen, rejected
from tests.support import Stack, Subscriber, wait_for


def watch_orders(stack: Stack, subscribers: list[Subscriber], rid: int) -> Subscriber:
    watcher = Subscriber(stack.settings.mqtt_port, "watcher", stack.mqtt_token("watcher", "staff", rid))
    subscribers.append(watcher)
    assert watcher.connect() == 0
    assert watcher.subscribe(f"restaurant/{rid}/orders") == 1
    return watcher


def next_update(watcher: Subscriber) -> dict[str, Any]:
    """The next order_updated envelope on the orders channel (new_order ones are skipped)."""
    while True:
        envelope = watcher.collect(1)[0].json()
        if envelope["type"] == "order_updated":
            return envelope


def bump(order_id: Any, to: str, request_id: str = "r1") -> dict[str, Any]:
    return {"type": "bumped", "order_id": order_id, "to": to, "request_id": request_id}


def test_a_tablet_bumps_an_order_through_the_bus(stack: Stack, subscribers, kitchen: Kitchen, tablet: Tablet):
    watcher = watch_orders(stack, subscribers, kitchen.rid)
    order = kitchen.place()
    oid = order["id"]
    for step, to in enumerate(("preparing", "ready", "completed"), start=2):
        tablet.send(bump(oid, to, f"req-{to}"))
        reply = tablet.reply()
        assert reply == {"type": "ack", "request_id": f"req-{to}", "order_id": oid, "status": to, "version": step}
        assert kitchen.order(oid) == (to, step)
        update = next_update(watcher)
        assert update["data"]["order"]["status"] == to and update["data"]["change"] == "status"
    tablet.send({"type": "recalled", "order_id": oid, "request_id": "undo"})
    assert tablet.reply() == {"type": "ack", "request_id": "undo", "order_id": oid, "status": "ready", "version": 5}
    assert kitchen.order(oid) == ("ready", 5)
    update = next_update(watcher)
    assert update["data"]["order"]["status"] == "ready" and update["data"]["change"] == "recall"
    assert stack.device("kds-1").last_seen is not None
    events_before = kitchen.events()
    tablet.send(bump(oid, "ready", "again"))  # already ready: a redelivered bump is acknowledged, not applied
    assert tablet.reply() == {"type": "ack", "request_id": "again", "order_id": oid, "status": "ready", "version": 5}
    assert kitchen.order(oid) == ("ready", 5) and kitchen.events() == events_before


def test_illegal_transitions_are_refused_and_change_nothing(kitchen: Kitchen, tablet: Tablet):
    oid = kitchen.place()["id"]
    before = kitchen.events()
    refused = rejected("refused")
    tablet.send(bump(oid, "completed", "skip"))
    reply = tablet.reply()
    assert reply["type"] == "error" and reply["reason"] == "refused" and reply["request_id"] == "skip"
    assert "pending cannot become completed" in reply["detail"]
    assert reply["topic"] == tablet.topic("events")
    tablet.send({"type": "recalled", "order_id": oid, "request_id": "too-early"})
    reply = tablet.reply()
    assert (reply["reason"], reply["request_id"]) == ("refused", "too-early")
    assert "cannot be recalled" in reply["detail"]
    assert rejected("refused") == refused + 2
    assert kitchen.order(oid) == ("pending", 1)
    assert kitchen.events() == before


def test_a_tablet_cannot_change_another_restaurants_orders(stack: Stack, subscribers, kitchen: Kitchen, tablet):
    other = open_kitchen(stack, "Other")
    other_tablet = Tablet(stack, subscribers, other.rid, "kds-other")
    theirs = other.place()["id"]
    before = other.events()
    denied = acl_denied_publishes()
    # 1. onto the other restaurant's topics, as their tablet or as itself: the broker's ACL drops it
    tablet.send(bump(theirs, "preparing", "as-them"), topic=other_tablet.topic("events"))
    tablet.send(bump(theirs, "preparing", "as-me"), topic=f"restaurant/{other.rid}/devices/kds-1/events")
    if stack.on_nats:  # NATS drops a publish its permissions refuse silently, and our broker's counter is not there
        time.sleep(0.5)  # no reply must come: nothing to poll for
        assert acl_denied_publishes() == denied
    else:
        wait_for(lambda: acl_denied_publishes() >= denied + 2)
    # 2. their order id on its own topic: the bridge refuses it as not found
    tablet.send(bump(theirs, "preparing", "mine"))
    reply = tablet.reply()  # this is the first reply: nothing came for the dropped ones
    assert (reply["type"], reply["reason"], reply["request_id"]) == ("error", "refused", "mine")
    assert f"order {theirs} not found" in reply["detail"]
    tablet.send({"type": "recalled", "order_id": theirs, "request_id": "mine-too"})
    assert tablet.reply()["reason"] == "refused"
    other_tablet.no_reply()
    assert other.order(theirs) == ("pending", 1)
    assert other.events() == before
    # and the other way round: their tablet cannot touch ours
    ours = kitchen.place()["id"]
    other_tablet.send(bump(ours, "preparing", "reverse"))
    assert other_tablet.reply()["reason"] == "refused"
    assert kitchen.order(ours) == ("pending", 1)


BIG = {"type": "bumped", "order_id": 1, "to": "ready", "request_id": "big", "pad": "x" * 5000}
BAD_INPUTS: list[tuple[str, dict[str, Any] | bytes | str, str, str | None]] = [
    ("not json", b"{bumped", "not_json", None),
    ("json array", b'[{"type": "bumped"}]', "bad_type", None),
    ("order_id as a string", "ORDER_AS_STRING", "bad_type", "r1"),
    ("order_id true", "ORDER_TRUE", "bad_type", "r1"),
    ("order_id float", "ORDER_FLOAT", "bad_type", "r1"),
    ("order_id zero", "ORDER_ZERO", "bad_field", "r1"),
    ("order_id beyond the database", "ORDER_HUGE", "bad_field", "r1"),
    ("unknown type", {"type": "exploded", "order_id": 1, "request_id": "u1"}, "bad_type", "u1"),
    ("type not a string", {"type": 7, "order_id": 1, "request_id": "u2"}, "bad_type", "u2"),
    ("missing type", {"order_id": 1, "request_id": "m0"}, "bad_field", "m0"),
    ("missing order_id", {"type": "bumped", "to": "ready", "request_id": "m1"}, "bad_field", "m1"),
    ("missing to", {"type": "bumped", "order_id": 1, "request_id": "m2"}, "bad_field", "m2"),
    ("missing request_id", {"type": "recalled", "order_id": 1}, "bad_field", None),
    ("request_id not a string", {"type": "recalled", "order_id": 1, "request_id": 5}, "bad_type", None),
    (
        "to not a status a tablet sets",
        {"type": "bumped", "order_id": 1, "to": "cancelled", "request_id": "t"},
        "bad_field",
        "t",
    ),
    ("to not a string", {"type": "bumped", "order_id": 1, "to": ["ready"], "request_id": "t2"}, "bad_type", "t2"),
    ("unknown field", {"type": "recalled", "order_id": 1, "request_id": "x", "force": True}, "bad_field", "x"),
    ("oversized", json.dumps(BIG).encode(), "too_large", None),
]


def test_bad_input_gets_an_error_reply_is_counted_and_changes_nothing(kitchen: Kitchen, tablet: Tablet):
    oid = kitchen.place()["id"]
    order_ids = {
        "ORDER_AS_STRING": str(oid),
        "ORDER_TRUE": True,
        "ORDER_FLOAT": float(oid),
        "ORDER_ZERO": 0,
        "ORDER_HUGE": 2**70,
    }
    before = kitchen.events()
    for name, payload, reason, request_id in BAD_INPUTS:
        if isinstance(payload, str):
            payload = bump(order_ids[payload], "preparing")
        count = rejected(reason)
        tablet.send(payload)
        reply = tablet.reply()
        assert reply["type"] == "error", name
        assert reply["reason"] == reason, (name, reply)
        assert reply.get("request_id") == request_id, (name, reply)
        assert reply["detail"], name
        assert rejected(reason) == count + 1, name
    assert kitchen.order(oid) == ("pending", 1)
    assert kitchen.events() == before


def test_the_kds_client_bumps_and_recalls_and_its_board_follows(stack: Stack, kitchen: Kitchen):
    oid = kitchen.place()["id"]
    token = stack.add_device(kitchen.rid, "kds-client", "tablet")
    client = KdsClient(token, "127.0.0.1", stack.settings.mqtt_port, Board())
    client.start()
    try:
        wait_for(lambda: [card.order_id for card in client.board.orders()] == [oid])  # the retained open order
        _, reply = client.bump(oid, "preparing")
        assert reply.result(10)["status"] == "preparing"
        _, reply = client.bump(oid, "ready")
        assert reply.result(10)["status"] == "ready"
        assert client.board.last_bumped() == oid
        _, reply = client.bump(oid, "ready")  # a second tap, or a redelivery: acknowledged, nothing changes
        assert reply.result(10) | {"request_id": None} == {
            "type": "ack",
            "request_id": None,
            "order_id": oid,
            "status": "ready",
            "version": 3,
        }
        _, reply = client.recall(oid)
        assert reply.result(10) | {"request_id": None} == {
            "type": "ack",
            "request_id": None,
            "order_id": oid,
            "status": "preparing",
            "version": 4,
        }
        assert client.board.last_bumped() is None
        wait_for(lambda: client.board.orders()[0].status == "preparing")
        assert kitchen.order(oid) == ("preparing", 4)
        assert not client.busy(oid)
    finally:
        client.stop()


class TicketSpy(Board):
    """A board that also keeps the kitchen tickets it was given."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.tickets: list[dict[str, Any]] = []

    def apply_ticket(self, ticket: dict[str, Any]) -> bool:
        self.tickets.append(ticket)
        return super().apply_ticket(ticket)


def test_station_tablets_get_live_tickets_and_show_only_their_station(stack: Stack, kitchen: Kitchen):
    grill_spy = TicketSpy(station="grill")
    grill = KdsClient(
        stack.add_device(kitchen.rid, "kds-grill", "tablet", station="grill"),
        "127.0.0.1",
        stack.settings.mqtt_port,
        grill_spy,
    )
    bar = KdsClient(
        stack.add_device(kitchen.rid, "kds-bar", "tablet", station="bar"),
        "127.0.0.1",
        stack.settings.mqtt_port,
        TicketSpy(station="bar"),
    )
    for client in (grill, bar):
        client.start()
    try:
        wait_for(lambda: grill.connected and bar.connected)
        # CONNACK is not SUBACK: NATS makes a JetStream consumer per subscription of a persistent session,
        # which takes longer than the embedded broker's table insert; a ticket before it would be missed live
        tickets = f"restaurant/{kitchen.rid}/kitchen/+/tickets"
        wait_for(lambda: stack.subscribed(tickets, "kds-grill") and stack.subscribed(tickets, "kds-bar"))
        oid = kitchen.place()["id"]  # burgers only: the grill
        wait_for(lambda: [ticket["kind"] for ticket in grill_spy.tickets] == ["new"])
        assert grill_spy.tickets[0]["order_id"] == oid and grill_spy.tickets[0]["station"] == "grill"
        wait_for(lambda: [card.order_id for card in grill.board.orders()] == [oid])
        wait_for(lambda: oid in bar.board.cards)  # the bar tablet knows the order …
        assert bar.board.orders() == []  # … but has nothing of it to cook
        response = kitchen.admin.post(f"/restaurants/{kitchen.rid}/orders/{oid}/status", json={"status": "cancelled"})
        assert response.status_code == 200, response.text
        wait_for(lambda: [ticket["kind"] for ticket in grill_spy.tickets] == ["new", "void"])
        wait_for(lambda: grill.board.orders() == [] and oid not in bar.board.cards)
    finally:
        for client in (grill, bar):
            client.stop()
