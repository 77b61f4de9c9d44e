"""What the printer accepts as a ticket: the contract's envelope, checked field by field and bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devices.ticket import MAX_PAYLOAD, BadTicket, parse_envelope, parse_ticket

TICKET = {
    "id": 17,
    "kind": "new",
    "order_id": 311,
    "version": 1,
    "station": "grill",
    "created_at": "2026-11-28T19:42:00.123Z",
    "table_name": "T12",
    "pickup_name": None,
    "server_name": "Ana",
    "notes": "",
    "items": [{"name": "Burger", "quantity": 2, "modifiers": ["no onion"], "notes": "", "course": "mains"}],
}


def envelope(ticket: object) -> bytes:
    body = {"v": 1, "id": "e1", "seq": 4, "type": "kitchen_ticket", "restaurant_id": 1, "ts": "x", "data": {}}
    body["data"] = {"ticket": ticket}
    return json.dumps(body).encode()


def test_the_contracts_example_parses():
    ticket = parse_envelope(envelope(TICKET))
    assert (ticket.id, ticket.kind, ticket.order_id, ticket.station) == (17, "new", 311, "grill")
    assert ticket.created_at == datetime(2026, 11, 28, 19, 42, 0, 123000, tzinfo=UTC)
    assert ticket.items[0].modifiers == ("no onion",)
    assert parse_ticket(json.loads(ticket.to_json())) == ticket  # what the journal stores comes back the same


def test_unknown_fields_are_ignored_and_optional_ones_default():
    minimal = {k: v for k, v in TICKET.items() if k not in ("table_name", "pickup_name", "server_name", "notes")}
    ticket = parse_ticket({**minimal, "future": True, "items": [{"name": "Fries", "quantity": 1}]})
    assert (ticket.table_name, ticket.notes, ticket.items[0].course, ticket.items[0].modifiers) == (None, "", None, ())


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"type": "new_order", "data": {}}).encode(), "not a kitchen_ticket"),
        (json.dumps({"type": "kitchen_ticket", "data": {"ticket": "17"}}).encode(), "data.ticket"),
        (json.dumps({"type": "kitchen_ticket"}).encode(), "data.ticket"),
        (b" " * (MAX_PAYLOAD + 1), "limit"),
    ],
)
def test_envelopes_that_are_not_tickets_are_refused(payload, message):
    with pytest.raises(BadTicket, match=message) as refused:
        parse_envelope(payload)
    assert refused.value.ticket_id is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "urgent"}, "kind"),
        ({"number": 0}, "number"),
        ({"number": "12"}, "number"),
        ({"number": True}, "number"),
        ({"order_id": "311"}, "order_id"),
        ({"order_id": True}, "order_id"),
        ({"version": None}, "version"),
        ({"station": ""}, "station"),
        ({"station": 5}, "station"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": 1732822920}, "created_at"),
        ({"table_name": ["T12"]}, "table_name"),
        ({"server_name": "x" * 61}, "server_name"),
        ({"items": []}, "items"),
        ({"items": "Burger"}, "items"),
        ({"items": [{"name": "Burger", "quantity": 1}] * 201}, "items"),
        ({"items": ["Burger"]}, r"items\[0\]"),
        ({"items": [{"name": "Burger", "quantity": 0}]}, "quantity"),
        ({"items": [{"name": "Burger", "quantity": 2.5}]}, "quantity"),
        ({"items": [{"name": "Burger", "quantity": "2"}]}, "quantity"),
        ({"items": [{"quantity": 2}]}, "name"),
        ({"items": [{"name": "Burger", "quantity": 2, "modifiers": "no onion"}]}, "modifiers"),
        ({"items": [{"name": "Burger", "quantity": 2, "modifiers": [None]}]}, "modifiers"),
        ({"items": [{"name": "Burger", "quantity": 2, "notes": 7}]}, "notes"),
    ],
)
def test_wrong_types_and_missing_fields_are_refused_with_the_ticket_id(changes, message):
    with pytest.raises(BadTicket, match=message) as refused:
        parse_envelope(envelope({**TICKET, **changes}))
    assert refused.value.ticket_id == 17  # so the agent can report this ticket `failed`


@pytest.mark.parametrize("ticket_id", [None, "17", 0, -3, True, 1.5])
def test_a_ticket_without_a_usable_id_is_refused_without_one(ticket_id):
    with pytest.raises(BadTicket, match="id") as refused:
        parse_envelope(envelope({**TICKET, "id": ticket_id}))
    assert refused.value.ticket_id is None


def test_the_restaurants_order_number_is_read_and_a_bus_without_it_gives_none():
    assert parse_ticket({**TICKET, "number": 12}).number == 12
    assert parse_ticket({k: v for k, v in TICKET.items() if k != "number"}).number is None
    assert parse_ticket(json.loads(parse_ticket({**TICKET, "number": 12}).to_json())).number == 12  # the journal


def test_the_fingerprint_tells_a_redelivery_from_a_reused_id():
    same = parse_ticket(dict(TICKET))
    assert parse_ticket(dict(TICKET)).fingerprint == same.fingerprint
    assert parse_ticket({**TICKET, "order_id": 1}).fingerprint != same.fingerprint
