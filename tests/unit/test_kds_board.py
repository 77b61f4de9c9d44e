"""The KDS board as a pure model: what a tablet shows for what it receives, at a given time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.kds_board import Board, Card, Line

START = datetime(2026, 11, 28, 19, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def order(order_id: int, status: str = "pending", version: int = 1, minutes_ago: float = 0, **extra: Any) -> dict:
    created = START - timedelta(minutes=minutes_ago)
    return {
        "id": order_id,
        "restaurant_id": 7,
        "status": status,
        "version": version,
        "table_name": extra.pop("table_name", f"T{order_id}"),
        "pickup_name": extra.pop("pickup_name", None),
        "server_name": "Ana",
        "notes": "",
        "created_at": created.replace(tzinfo=None).isoformat(),  # as SQLite gives it: naive UTC
        "items": extra.pop(
            "items",
            [{"name": "Burger", "quantity": 2, "modifiers": ["no onion"], "notes": "", "station": "grill"}],
        ),
        **extra,
    }


def envelope(kind: str, data: dict, event_id: str | None = None) -> dict:
    return {"v": 1, "id": event_id or uuid.uuid4().hex, "seq": 1, "type": kind, "restaurant_id": 7, "data": data}


def order_of(card: Card | None) -> int | None:
    return card.order_id if card is not None else None


def send(board: Board, topic: str, body: dict | bytes) -> bool:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return board.receive(f"restaurant/7/{topic}", payload)


def ticket(order_id: int, station: str, kind: str = "new", ticket_id: int = 1, version: int = 1) -> dict:
    return {
        "id": ticket_id,
        "kind": kind,
        "order_id": order_id,
        "version": version,
        "station": station,
        "created_at": START.isoformat().replace("+00:00", "Z"),
        "table_name": "T9",
        "pickup_name": None,
        "server_name": "Ana",
        "notes": "",
        "items": [{"name": "Negroni", "quantity": 1, "modifiers": [], "notes": "", "course": None}],
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(clock: Clock) -> Board:
    return Board(clock=clock)


def ids(board: Board) -> list[int]:
    return [card.order_id for card in board.orders()]


# --- colours -------------------------------------------------------------------------------


def test_colour_turns_yellow_at_five_and_red_at_eight_minutes(board: Board, clock: Clock):
    send(board, "orders/open/1", envelope("new_order", {"order": order(1)}))
    card = board.orders()[0]
    assert board.colour(card) == "normal"
    clock.advance(minutes=4, seconds=59)
    assert board.colour(card) == "normal"
    clock.advance(seconds=1)
    assert board.colour(card) == "warn"  # warn_minutes ≤ elapsed
    clock.advance(minutes=2, seconds=59)
    assert board.colour(card) == "warn"
    clock.advance(seconds=1)
    assert board.colour(card) == "late"
    assert board.elapsed(card) == timedelta(minutes=8)


def test_thresholds_are_configurable(clock: Clock):
    board = Board(warn_minutes=1, late_minutes=2, clock=clock)
    send(board, "orders", envelope("new_order", {"order": order(1, minutes_ago=1.5)}))
    assert board.colour(board.orders()[0]) == "warn"
    clock.advance(seconds=30)
    assert board.colour(board.orders()[0]) == "late"
    with pytest.raises(ValueError):
        Board(warn_minutes=9, late_minutes=8)


def test_elapsed_never_negative_when_the_tablet_clock_is_behind(board: Board, clock: Clock):
    send(board, "orders", envelope("new_order", {"order": order(1, minutes_ago=-2)}))
    assert board.elapsed(board.orders()[0]) == timedelta(0)


# --- what is shown, in which order -----------------------------------------------------------


def test_orders_are_shown_oldest_first_whatever_order_they_arrive_in(board: Board):
    send(board, "orders/open/3", envelope("new_order", {"order": order(3, minutes_ago=1)}))
    send(board, "orders/open/1", envelope("new_order", {"order": order(1, minutes_ago=9)}))
    send(board, "orders/open/2", envelope("new_order", {"order": order(2, minutes_ago=4)}))
    send(board, "orders/open/4", envelope("new_order", {"order": order(4, minutes_ago=4)}))  # tie: by id
    assert ids(board) == [1, 2, 4, 3]


def test_card_fields_for_the_screen(board: Board):
    send(board, "orders", envelope("new_order", {"order": order(5, table_name=None, pickup_name="Zoe")}))
    card = board.orders()[0]
    assert card.where == "pickup Zoe"
    assert card.label == "PENDING"  # the dashboard's badge
    assert [line.text() for line in board.lines_of(card)] == ["2 x Burger (no onion)"]


def test_the_same_event_twice_is_applied_once(board: Board):
    event = envelope("new_order", {"order": order(1)})
    assert send(board, "orders", event) is True
    assert send(board, "orders/open/1", event) is False  # the retained copy of the same event
    assert send(board, "orders", event) is False  # a QoS 1 repeat
    assert ids(board) == [1]


def test_an_older_version_never_undoes_a_newer_one(board: Board):
    send(board, "orders", envelope("order_updated", {"order": order(1, "ready", version=3)}))
    assert send(board, "orders/open/1", envelope("order_updated", {"order": order(1, "preparing", version=2)})) is False
    assert board.orders()[0].status == "ready"


def test_an_empty_retained_payload_clears_the_order(board: Board):
    send(board, "orders/open/1", envelope("new_order", {"order": order(1)}))
    send(board, "orders/open/2", envelope("new_order", {"order": order(2)}))
    assert send(board, "orders/open/1", b"") is True
    assert ids(board) == [2]
    assert send(board, "orders/open/1", b"") is False  # already gone
    # a late copy of an older state must not bring it back …
    assert send(board, "orders", envelope("order_updated", {"order": order(1, "preparing", version=1)})) is False
    assert ids(board) == [2]


def test_a_closed_order_leaves_and_a_recalled_one_comes_back(board: Board):
    send(board, "orders", envelope("new_order", {"order": order(1)}))
    send(board, "orders", envelope("order_updated", {"order": order(1, "completed", version=4)}))
    assert ids(board) == []
    send(board, "orders", envelope("order_updated", {"order": order(1, "ready", version=5)}))  # recalled
    assert [(card.order_id, card.status) for card in board.orders()] == [(1, "ready")]
    send(board, "orders", envelope("order_updated", {"order": order(1, "cancelled", version=6)}))
    assert ids(board) == []


def test_garbage_is_ignored(board: Board):
    assert send(board, "orders", b"not json") is False
    assert send(board, "orders", envelope("new_order", {"order": {"id": "x"}})) is False
    assert send(board, "orders/open/abc", b"") is False
    assert send(board, "inventory", envelope("inventory_updated", {"item": {}})) is False
    assert send(board, "orders", envelope("order_updated", {"order": order(1)})) is True


# --- tickets ---------------------------------------------------------------------------------


def test_a_ticket_shows_an_order_not_seen_yet_and_the_order_replaces_it(board: Board):
    send(board, "kitchen/bar/tickets", envelope("kitchen_ticket", {"ticket": ticket(9, "bar", ticket_id=1)}))
    send(board, "kitchen/grill/tickets", envelope("kitchen_ticket", {"ticket": ticket(9, "grill", ticket_id=2)}))
    card = board.orders()[0]
    assert card.provisional and card.status == "pending"
    assert {line.station for line in card.lines} == {"bar", "grill"}
    assert send(board, "orders", envelope("new_order", {"order": order(9)})) is True
    assert not board.orders()[0].provisional


def test_a_void_ticket_takes_the_order_off_and_a_late_ticket_does_not_revive_it(board: Board):
    send(board, "orders", envelope("new_order", {"order": order(9)}))
    send(board, "kitchen/grill/tickets", envelope("kitchen_ticket", {"ticket": ticket(9, "grill", "void", 3, 2)}))
    assert ids(board) == []
    assert (
        send(board, "kitchen/bar/tickets", envelope("kitchen_ticket", {"ticket": ticket(9, "bar", ticket_id=1)}))
        is False
    )
    assert ids(board) == []


def test_a_station_screen_shows_only_its_items(clock: Clock):
    board = Board(clock=clock, station="bar")
    items = [
        {"name": "Burger", "quantity": 1, "station": "grill"},
        {"name": "Negroni", "quantity": 2, "station": "bar"},
    ]
    send(board, "orders", envelope("new_order", {"order": order(1, items=items)}))
    send(board, "orders", envelope("new_order", {"order": order(2)}))  # grill only
    assert ids(board) == [1]
    assert [line.name for line in board.lines_of(board.orders()[0])] == ["Negroni"]
    kitchen = Board(clock=clock, station="kitchen")
    send(kitchen, "orders", envelope("new_order", {"order": order(3, items=[{"name": "Soup", "quantity": 1}])}))
    assert ids(kitchen) == [3]  # no station: the default station


# --- selection, bump steps, recall -----------------------------------------------------------


def test_selection_moves_and_follows_when_the_selected_order_leaves(board: Board):
    assert board.selection() is None and board.move(1) is None
    for order_id in (1, 2, 3):
        send(board, "orders", envelope("new_order", {"order": order(order_id, minutes_ago=10 - order_id)}))
    assert order_of(board.selection()) == 1
    assert order_of(board.move(1)) == 2
    assert order_of(board.move(5)) == 3  # clamped at the bottom
    assert order_of(board.move(-1)) == 2
    send(board, "orders/open/2", b"")
    assert order_of(board.selection()) == 3  # the one that took its place
    send(board, "orders/open/3", b"")
    assert order_of(board.selection()) == 1


def test_bump_steps(board: Board):
    steps = {
        status: board.next_step(Card(1, status, 1, START, (Line("x", 1),)))
        for status in ("pending", "preparing", "ready")
    }
    assert steps == {"pending": "preparing", "preparing": "ready", "ready": "completed"}


def test_recall_stack_keeps_the_last_recallable_bumps(clock: Clock):
    board = Board(clock=clock, recall_depth=3)
    assert board.last_bumped() is None
    board.bumped(1, "preparing")  # the bus cannot take that back: not offered
    assert board.last_bumped() is None
    for order_id in (1, 2, 3, 4):
        board.bumped(order_id, "completed")
    board.bumped(2, "ready")  # bumped again: now the latest
    assert board.recall_stack == [3, 4, 2]
    board.recalled(2)
    assert board.last_bumped() == 4
    board.recalled(99)  # not there: nothing happens
    assert board.recall_stack == [3, 4]


def test_an_ack_shows_the_new_status_before_its_event_arrives(board: Board):
    send(board, "orders", envelope("new_order", {"order": order(1)}))
    assert board.apply_ack(1, "preparing", 2) is True
    assert board.orders()[0].status == "preparing"
    assert send(board, "orders", envelope("order_updated", {"order": order(1, "preparing", version=2)})) is False
    assert board.apply_ack(1, "completed", 3) is True
    assert ids(board) == []
    assert board.apply_ack(1, "ready", 3) is False  # not newer


def test_an_ack_of_a_recall_leaves_the_order_to_its_event(board: Board):
    """The recalled order is not on the board: only its event has the items, and it must still apply."""
    send(board, "orders", envelope("new_order", {"order": order(1, "ready", version=3)}))
    assert board.apply_ack(1, "completed", 4) is True
    assert board.apply_ack(1, "ready", 5) is False
    assert send(board, "orders", envelope("order_updated", {"order": order(1, "ready", version=5)})) is True
    assert [(card.order_id, card.status, card.version) for card in board.orders()] == [(1, "ready", 5)]


def at(seq: int, kind: str, data: dict) -> dict:
    return {**envelope(kind, data), "seq": seq}


def test_a_snapshot_replaces_what_the_board_learnt_up_to_its_seq(board: Board):
    """After a 410 the screen restarts from a snapshot: orders it no longer lists closed meanwhile,
    unless an event after the snapshot's seq brought them (that order is newer than the snapshot)."""
    board.apply_envelope(at(1, "new_order", {"order": order(1)}))
    board.apply_envelope(at(2, "new_order", {"order": order(2)}))
    board.apply_envelope(at(9, "kitchen_ticket", {"ticket": ticket(3, "grill", ticket_id=5)}))
    assert ids(board) == [1, 2, 3]

    assert board.restart([order(2, "preparing", version=2)], seq=5) is True
    assert ids(board) == [2, 3]  # 1 closed before seq 5; 3 came at seq 9
    assert board.cards[2].status == "preparing"
    assert board.restart([order(2, "pending", version=1)], seq=6) is False  # an older version changes nothing
    assert board.cards[2].status == "preparing"
    # the order that left is not revived by a late copy of what it was
    assert board.apply_envelope(at(1, "new_order", {"order": order(1)})) is False
    assert ids(board) == [2, 3]


def test_events_read_again_by_catch_up_change_nothing(board: Board):
    events = [at(1, "new_order", {"order": order(1)}), at(2, "order_updated", {"order": order(1, "cancelled", 2)})]
    for event in events:
        board.apply_envelope(event)
    assert ids(board) == []
    assert [board.apply_envelope(event) for event in events] == [False, False]
    assert board.apply_envelope({**events[0], "id": "another copy"}) is False  # same version, other id
    assert ids(board) == []


# --- an edit's chits ---------------------------------------------------------------------------


def chit(order_id: int, kind: str, ticket_id: int, version: int, *items: dict) -> dict:
    return {**ticket(order_id, "grill", kind, ticket_id, version), "partial": True, "items": list(items)}


BURGER = {"name": "Burger", "quantity": 1, "modifiers": ["no onion"], "notes": "", "course": None}
FRIES = {"name": "Fries", "quantity": 2, "modifiers": [], "notes": "", "course": None}


def edited(version: int, *items: dict) -> dict:
    return order(9, version=version, items=[{**item, "station": "grill"} for item in items])


def shown(board: Board) -> list[tuple[str, int]]:
    card = board.orders()[0]
    return [(line.name, line.quantity) for line in board.lines_of(card)]


def struck(board: Board) -> list[tuple[str, int]]:
    return [(line.name, line.quantity) for line in board.voided_of(board.orders()[0])]


@pytest.mark.parametrize("order_first", [True, False])
def test_a_partial_void_strikes_only_its_lines_and_an_add_adds(board: Board, order_first: bool):
    """Order 9 had 2 burgers; the edit voids one and adds fries. Whichever comes first, the order's event or the
    chits, the card ends with 1 burger and 2 fries and the voided burger struck: the order stays on the screen."""
    send(board, "orders", envelope("new_order", {"order": order(9)}))  # 2 x Burger (no onion)
    update = envelope("order_updated", {"order": edited(2, BURGER, FRIES), "change": "items"})
    void = envelope("kitchen_ticket", {"ticket": chit(9, "void", 5, 2, BURGER)})
    add = envelope("kitchen_ticket", {"ticket": chit(9, "new", 6, 2, FRIES)})
    for message in [update, void, add] if order_first else [void, add, update]:
        topic = "orders" if message["type"] == "order_updated" else "kitchen/grill/tickets"
        assert send(board, topic, message) is True
        assert ids(board) == [9]
    assert shown(board) == [("Burger", 1), ("Fries", 2)]
    assert struck(board) == [("Burger", 1)]
    assert board.all_day() == [("Fries", 2), ("Burger", 1)]  # a struck line is not cooked
    resent = envelope("kitchen_ticket", {"ticket": chit(9, "void", 5, 2, BURGER)}, event_id="another")
    assert send(board, "kitchen/grill/tickets", resent) is False  # the same chit sent again
    assert shown(board) == [("Burger", 1), ("Fries", 2)] and struck(board) == [("Burger", 1)]


def test_voiding_every_line_of_a_station_keeps_the_order_until_it_closes(board: Board):
    send(board, "orders", envelope("new_order", {"order": order(9)}))
    two = {**BURGER, "quantity": 2}
    send(board, "kitchen/grill/tickets", envelope("kitchen_ticket", {"ticket": chit(9, "void", 5, 2, two)}))
    assert board.cards[9].lines == () and [line.quantity for line in board.cards[9].voided] == [2]
    cancelled = envelope("order_updated", {"order": order(9, status="cancelled", version=3)})
    send(board, "orders", cancelled)
    assert ids(board) == []


def test_an_add_chit_for_an_order_not_seen_yet_shows_it(board: Board):
    assert send(board, "kitchen/grill/tickets", envelope("kitchen_ticket", {"ticket": chit(9, "new", 5, 2, FRIES)}))
    assert shown(board) == [("Fries", 2)] and board.orders()[0].provisional
    void = envelope("kitchen_ticket", {"ticket": chit(8, "void", 6, 2, FRIES)})
    assert send(board, "kitchen/grill/tickets", void) is False and ids(board) == [9]
