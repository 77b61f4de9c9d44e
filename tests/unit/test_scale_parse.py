"""bridge.scales.parse_reading: what a scale reading must look like on the wire (docs/devices.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.ingest import Rejected
from bridge.scales import parse_reading
from core.rules.scales import Reading


def body(**changes: Any) -> dict[str, Any]:
    reading = {"item_id": 12, "grams": 5230.5, "seq": 41, "boot_id": "b" * 32, "ts": "2026-11-28T19:42:00.123Z"}
    reading.update(changes)
    return {k: v for k, v in reading.items() if v is not ...}


def reason(call: Any) -> str:
    with pytest.raises(Rejected) as caught:
        call()
    return caught.value.reason


def test_a_reading_as_the_contract_shows_it_parses():
    reading = parse_reading(body())
    assert reading == Reading(12, 5230.5, 41, "b" * 32, datetime(2026, 11, 28, 19, 42, 0, 123000, tzinfo=UTC))


def test_integer_grams_and_offsets_are_fine():
    assert parse_reading(body(grams=5000, ts="2026-11-28T20:42:00+01:00")).ts == datetime(
        2026, 11, 28, 19, 42, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"item_id": "12"},
        {"item_id": True},
        {"item_id": 1.0},
        {"item_id": 0},
        {"item_id": ...},
        {"seq": -1},
        {"seq": "41"},
        {"seq": False},
        {"seq": 2**64},
        {"boot_id": ""},
        {"boot_id": 7},
        {"boot_id": "x" * 65},
        {"ts": 1732822920},
        {"ts": "yesterday"},
        {"ts": "2026-11-28T19:42:00"},  # no time zone
        {"ts": ...},
    ],
)
def test_wrong_types_are_bad_type(changes):
    assert reason(lambda: parse_reading(body(**changes))) == "bad_type"


@pytest.mark.parametrize("grams", ["5230", None, True, False, [], {}])
def test_grams_that_are_not_a_number_are_bad_weight(grams):
    assert reason(lambda: parse_reading(body(grams=grams))) == "bad_weight"


def test_the_weight_itself_is_left_to_the_core_rules():
    assert parse_reading(body(grams=-9.9)).grams == -9.9
    assert parse_reading(body(grams=1e12)).grams == 1e12
