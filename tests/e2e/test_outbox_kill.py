"""The real `orderbus up`, killed with SIGKILL while the broker keeps refusing an event in flight: the
count of refusals survives in the outbox row, so after the restart the relay dead-letters the event
once the total reaches the bound (not the bound again from zero) and publishes the events after it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from core.db import make_engine
from core.events import Event
from core.unit_of_work import UnitOfWork
from tests.e2e.test_cli import Up, start_up
from tests.support import wait_for


def admin_client(up: Up) -> tuple[httpx.Client, int]:
    credentials = json.loads((up.data_dir / "demo-credentials.json").read_text())
    answer = httpx.post(f"{up.api}/auth/login", json=credentials, timeout=10).json()
    client = httpx.Client(base_url=up.api, headers={"authorization": f"Bearer {answer['access_token']}"}, timeout=10)
    return client, answer["restaurant_id"]


def outbox_row(data_dir: Path, rid: int, seq: int) -> tuple[int | None, str | None, str | None]:
    """(attempts, published_at, dead_letter_reason)"""
    with sqlite3.connect(data_dir / "orderbus.db") as db:
        return db.execute(
            "select attempts, published_at, dead_letter_reason from outbox_event where restaurant_id = ? and seq = ?",
            (rid, seq),
        ).fetchone()


def pending(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "orderbus.db") as db:
        return db.execute("select count(*) from outbox_event where published_at is null").fetchone()[0]


def test_a_kill_9_while_the_broker_refuses_an_event_does_not_reset_its_tries(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ORDERBUS_MQTT_MAX_PACKET_BYTES", str(1024 * 1024))  # the embedded broker takes 256 KiB
    data_dir = tmp_path / "data"
    up = start_up(data_dir)
    try:
        admin, rid = admin_client(up)
        engine = make_engine(f"sqlite:///{data_dir / 'orderbus.db'}")
        order = {"id": 10**6, "status": "pending", "version": 1, "items": [], "notes": "ж" * 150_000}
        with UnitOfWork(engine) as uow:
            poison = uow.emit(rid, Event("new_order", {"order": order})).seq
            uow.commit()
        engine.dispose()
        wait_for(lambda: (outbox_row(data_dir, rid, poison)[0] or 0) >= 1, timeout=20, interval=0.05)
        tries_before_kill = outbox_row(data_dir, rid, poison)[0]
        up.process.kill()
        up.process.wait(timeout=10)
    finally:
        up.stop()
    if tries_before_kill is None or tries_before_kill >= 5:
        pytest.fail(f"the kill came too late to test anything: {tries_before_kill} tries")

    again = start_up(data_dir)
    try:
        admin, rid = admin_client(again)
        items = admin.get(f"/restaurants/{rid}/menu-items").json()["data"]
        line = {"menu_item_id": items[0]["id"], "quantity": 1}
        placed = admin.post(f"/restaurants/{rid}/orders", json={"items": [line]})
        assert placed.status_code == 201, placed.text
        wait_for(lambda: pending(data_dir) == 0, timeout=40, interval=0.2)
        attempts, published_at, reason = outbox_row(data_dir, rid, poison)
        assert attempts == 5 and published_at is not None
        assert reason is not None and reason.startswith("refused")
        after = admin.get(f"/restaurants/{rid}/events", params={"after": poison - 1}).json()
        assert after[0]["seq"] == poison and after[0]["mqtt_withheld"] is True
        assert [e["type"] for e in after[1:]].count("new_order") == 1, "the order after it is there, once"
    finally:
        assert again.stop() == 0
