"""A tablet's `request_id` is its idempotency key: real broker, real ingest, real SQLite.

A bump or recall sent again with the same request id (a QoS 1 redelivery, a retry after a lost
ack) must change nothing and get the first ack, even when the order moved on meanwhile; a recall
sent twice must not go back two steps.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, update
from sqlmodel import select

from core.models import IdempotencyRecord, utcnow
from core.unit_of_work import UnitOfWork
from tests.integration.kitchen import Kitchen, Tablet, rejected
from tests.support import Stack, wait_for


def test_a_bump_sent_again_gets_the_first_ack_and_changes_nothing(kitchen: Kitchen, tablet: Tablet):
    oid = kitchen.place()["id"]
    bump = {"type": "bumped", "order_id": oid, "to": "preparing", "request_id": "bump-1"}
    tablet.send(bump)
    first = tablet.reply()
    assert first == {"type": "ack", "request_id": "bump-1", "order_id": oid, "status": "preparing", "version": 2}
    tablet.send({"type": "bumped", "order_id": oid, "to": "ready", "request_id": "bump-2"})
    assert tablet.reply()["status"] == "ready"
    events = kitchen.events()
    tablet.send(bump)  # the first bump again, after the order moved on: not refused, not applied
    assert tablet.reply() == first
    assert kitchen.order(oid) == ("ready", 3) and kitchen.events() == events


def test_a_recall_sent_again_goes_back_one_step_only(kitchen: Kitchen, tablet: Tablet):
    oid = kitchen.place()["id"]
    for step, to in enumerate(("preparing", "ready"), start=1):
        tablet.send({"type": "bumped", "order_id": oid, "to": to, "request_id": f"b{step}"})
        tablet.reply()
    recall = {"type": "recalled", "order_id": oid, "request_id": "undo-1"}
    tablet.send(recall)
    first = tablet.reply()
    assert first["status"] == "preparing"
    tablet.send(recall)
    assert tablet.reply() == first
    assert kitchen.order(oid) == ("preparing", 4)


def test_a_request_id_reused_for_another_request_is_refused(kitchen: Kitchen, tablet: Tablet):
    first, second = kitchen.place()["id"], kitchen.place()["id"]
    tablet.send({"type": "bumped", "order_id": first, "to": "preparing", "request_id": "same"})
    assert tablet.reply()["type"] == "ack"
    refused = rejected("bad_field")
    tablet.send({"type": "bumped", "order_id": second, "to": "preparing", "request_id": "same"})
    reply = tablet.reply()
    assert (reply["type"], reply["reason"], reply["request_id"]) == ("error", "bad_field", "same")
    assert "already used for another request" in reply["detail"]
    wait_for(lambda: rejected("bad_field") == refused + 1)
    assert kitchen.order(second) == ("pending", 1)


def test_two_tablets_may_use_the_same_request_id(stack: Stack, subscribers, kitchen: Kitchen, tablet: Tablet):
    other = Tablet(stack, subscribers, kitchen.rid, "kds-2")
    first, second = kitchen.place()["id"], kitchen.place()["id"]
    tablet.send({"type": "bumped", "order_id": first, "to": "preparing", "request_id": "r1"})
    other.send({"type": "bumped", "order_id": second, "to": "preparing", "request_id": "r1"})
    assert tablet.reply()["order_id"] == first and other.reply()["order_id"] == second
    assert kitchen.order(first) == kitchen.order(second) == ("preparing", 2)


def test_the_running_bus_prunes_a_day_old_request_id_and_it_is_free_again(
    stack: Stack, kitchen: Kitchen, tablet: Tablet
):
    oid = kitchen.place()["id"]
    tablet.send({"type": "bumped", "order_id": oid, "to": "preparing", "request_id": "old"})
    assert tablet.reply()["status"] == "preparing"

    def records() -> int:
        with UnitOfWork(stack.engine) as uow:
            return uow.session.exec(select(func.count()).select_from(IdempotencyRecord)).one()

    assert records() == 1
    with UnitOfWork(stack.engine) as uow:
        uow.session.execute(update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=24, seconds=1)))
        uow.commit()
    wait_for(lambda: records() == 0, timeout=10)  # the sweeper of the running bus, once a second
    tablet.send({"type": "bumped", "order_id": oid, "to": "ready", "request_id": "old"})  # a new request now
    assert tablet.reply()["status"] == "ready"
