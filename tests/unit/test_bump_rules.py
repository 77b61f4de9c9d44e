"""core.domain's kitchen-screen rules (bump, recall) and the reasons a tablet reads when one refuses it."""

from __future__ import annotations

import pytest

from bridge.ingest import Rejected, reason_of
from core.domain import (
    BUMP_TARGETS,
    BUMPS,
    OPEN_STATUSES,
    RECALLS,
    TRANSITIONS,
    DomainError,
    Invalid,
    NotFound,
    OrderStatus,
    bump_target,
)


def test_a_bump_moves_every_open_order_one_legal_step_on():
    assert set(BUMPS) == OPEN_STATUSES
    for source, target in BUMPS.items():
        assert target in TRANSITIONS[source]


def test_a_recall_takes_back_a_bump():
    for source, target in RECALLS.items():
        assert BUMPS[target] == source


@pytest.mark.parametrize("to", ["preparing", "ready", "completed"])
def test_a_screen_may_bump_an_order_on(to):
    assert bump_target(to) == OrderStatus(to)


@pytest.mark.parametrize("to", ["cancelled", "pending", "done", ""])
def test_a_screen_may_not_cancel_or_go_back_by_bumping(to):
    assert to not in BUMP_TARGETS
    with pytest.raises(Invalid) as caught:
        bump_target(to)
    assert caught.value.reason == "unknown_target"


@pytest.mark.parametrize(
    ("error", "wire"),
    [
        (Invalid("unknown_target", "to must be …"), "bad_field"),  # the device contract calls it a bad field
        (Invalid("not_whole", "2.5 units"), "not_whole"),
        (NotFound("order 7 not found"), "refused"),
        (DomainError("an order that is pending cannot become completed"), "refused"),
        (Rejected("bad_type", "type must be a string"), "bad_type"),
    ],
)
def test_the_reason_a_device_reads(error, wire):
    assert reason_of(error) == wire
