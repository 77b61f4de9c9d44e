"""The NATS client list's pure parts: the user name the responder writes and reads back (restaurant
included), and CONNZ entries turned into the operators' rows."""

from __future__ import annotations

import pytest

from broker.nats.callout import claims_of_user, user_name
from broker.nats.clients import client_rows

CONNZ_START = "2026-12-03T03:17:02.950326118Z"  # as nats-server 2.15 writes it: nanoseconds


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "printer-1", "role": "printer", "rid": 7, "jti": "abc"},
        {"sub": "ops", "role": "super_admin", "rid": None, "jti": "j1"},
        {"sub": "odd/id", "role": "admin", "rid": 12, "jti": "j2"},  # a slash in the client id
    ],
)
def test_the_user_name_gives_back_the_claims_it_was_written_from(claims):
    assert claims_of_user(user_name(claims)) == claims


@pytest.mark.parametrize(
    ("name", "claims"),
    [
        ("kds-1/tablet/jti9", {"sub": "kds-1", "role": "tablet", "jti": "jti9"}),  # before restaurants: no rid
        ("p/q/admin/jti", {"sub": "p/q", "role": "admin", "jti": "jti"}),  # old form, slash in the id
        ("", None),
        ("orderbus-callout", None),  # the responder's own user
        ("a//b", None),
        ("a/b/x7/", None),
    ],
)
def test_names_of_the_older_form_and_names_not_ours(name, claims):
    assert claims_of_user(name) == claims


def test_connz_entries_become_rows_and_what_nats_does_not_say_is_none():
    connz = [
        ("S1", {"type": "nats", "name": "orderbus-callout", "authorized_user": "orderbus-callout", "cid": 1}),
        ("S1", {"type": "mqtt", "mqtt_client": "printer-1", "authorized_user": "printer-1/printer/7/abc",
                "ip": "127.0.0.1", "port": 40000, "start": CONNZ_START, "cid": 2}),
        ("S2", {"type": "mqtt", "mqtt_client": "", "authorized_user": "x/admin/1/j", "cid": 3}),  # no client id
        ("S2", {"type": "mqtt", "mqtt_client": "stranger", "authorized_user": "not ours", "start": "junk", "cid": 4}),
    ]  # fmt: skip
    rows = client_rows(connz)
    assert [row["client_id"] for row in rows] == ["printer-1", "stranger"]
    printer, stranger = rows
    assert (printer["role"], printer["restaurant_id"], printer["address"]) == ("printer", 7, "127.0.0.1:40000")
    assert printer["connected_since"] == "2026-12-03T03:17:02.950326+00:00"
    assert (printer["listener"], printer["queue_depth"], printer["inflight"], printer["persistent"]) == (None,) * 4
    # a user name that is not ours: no role, no restaurant, so only a super_admin sees it
    assert (stranger["role"], stranger["restaurant_id"], stranger["connected_since"]) == ("none", None, None)
