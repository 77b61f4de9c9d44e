"""Idempotency keys across kill -9: the real `orderbus up`, killed while clients fire keyed orders.

A client whose request was cut off cannot know whether its order was committed. Retrying with the
same key after the restart must give exactly one order per key: the first answer when the commit
happened before the kill, a fresh order when it did not. Nothing may be missing, nothing doubled,
and the restaurant's event seq stays gap-free.

Where a kill lands in a request is chance, so each round also sends a few orders whose answers are
never read: the test waits until they are committed, then kills. Those are the case that matters,
a commit the client never heard of, and their retries must be answered from the stored response.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_cli import Up, login, start_up
from tests.support import wait_for

CLIENTS = 6
ROUNDS = 2
KILL_AFTER = 30  # answered orders per round before the kill
UNHEARD = 3  # orders per round committed before the kill whose answers the client never reads


@dataclass
class Round:
    """What the clients of one round sent and heard; `lost` are keys sent without an answer."""

    answered: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    unheard: set[str] = field(default_factory=set)  # committed, answer never read
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def order_body(key: str, item_id: int) -> dict[str, Any]:
    return {"items": [{"menu_item_id": item_id, "quantity": 1}], "notes": key}


def send_unread(up: Up, admin: httpx.Client, rid: int, item_id: int, key: str) -> socket.socket:
    """POST a keyed order on a raw socket and never read the answer: the client cannot know the outcome."""
    body = json.dumps(order_body(key, item_id)).encode()
    head = (
        f"POST /api/v1/restaurants/{rid}/orders HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: {admin.headers['authorization']}\r\ncontent-type: application/json\r\n"
        f"idempotency-key: {key}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    connection = socket.create_connection(("127.0.0.1", up.http_port), timeout=10)
    connection.sendall(head.encode() + body)
    return connection


def committed_notes(admin: httpx.Client, rid: int) -> set[str]:
    return {order["notes"] for order in admin.get(f"/restaurants/{rid}/orders", params={"limit": 500}).json()["data"]}


def fire_until_killed(up: Up, admin: httpx.Client, rid: int, item_id: int, prefix: str) -> Round:
    """CLIENTS threads post keyed orders; UNHEARD more are sent unread and committed; then the process
    is killed -9 once KILL_AFTER were answered. Each thread stops at its first cut-off request, so every
    lost key is one whose fate is unknown to its client."""
    sent = Round()
    numbers = itertools.count()

    def client() -> None:
        http = httpx.Client(base_url=up.api, headers=admin.headers, timeout=10)
        while True:
            key = f"{prefix}-{next(numbers)}"
            try:
                response = http.post(
                    f"/restaurants/{rid}/orders", json=order_body(key, item_id), headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                with sent.lock:
                    sent.lost.add(key)
                return
            with sent.lock:
                if response.status_code != 201:
                    sent.failures.append(f"{key}: {response.status_code} {response.text[:200]}")
                    return
                sent.answered[key] = response.json()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(sent.answered) >= KILL_AFTER or sent.failures, timeout=60)
    unheard = {
        f"{prefix}-unheard-{n}": send_unread(up, admin, rid, item_id, f"{prefix}-unheard-{n}") for n in range(UNHEARD)
    }
    wait_for(lambda: set(unheard) <= committed_notes(admin, rid), timeout=30)
    up.process.kill()  # SIGKILL: no drain, no response for whatever was in flight
    up.process.wait(10)
    for connection in unheard.values():
        connection.close()
    sent.unheard = set(unheard)
    for thread in threads:
        thread.join(30)
    assert not sent.failures, sent.failures
    return sent


def retry(admin: httpx.Client, rid: int, item_id: int, keys: set[str]) -> dict[str, httpx.Response]:
    return {
        key: admin.post(f"/restaurants/{rid}/orders", json=order_body(key, item_id), headers={"Idempotency-Key": key})
        for key in sorted(keys)
    }


def test_kill_9_while_clients_order_with_keys_loses_and_doubles_nothing(tmp_path: Path):
    data_dir = tmp_path / "data"
    up = start_up(data_dir)
    admin, rid = login(up)
    item_id = next(
        item["id"]
        for item in admin.get(f"/restaurants/{rid}/menu-items").json()["data"]
        if not item["enable_stock_tracking"]
    )
    answered: dict[str, dict[str, Any]] = {}
    lost_total, replayed_after_kill = 0, 0
    try:
        for number in range(ROUNDS):
            sent = fire_until_killed(up, admin, rid, item_id, f"round{number}")
            up = start_up(data_dir)
            admin, rid = login(up)  # a new login of the same user: its keys are still its own
            retried = retry(admin, rid, item_id, sent.lost | sent.unheard)
            for key, response in retried.items():
                assert response.status_code == 201, (key, response.text)
                replayed = response.headers.get("idempotent-replayed") == "true"
                assert replayed or key not in sent.unheard, key  # committed before the kill: the first answer
                replayed_after_kill += replayed
                answered[key] = response.json()
            lost_total += len(sent.lost | sent.unheard)
            # an answered key sent again after the restart gets the same answer
            for key in sorted(sent.answered)[:5]:
                again = retry(admin, rid, item_id, {key})[key]
                assert again.headers["idempotent-replayed"] == "true" and again.json() == sent.answered[key], key
            answered |= sent.answered
        assert replayed_after_kill >= ROUNDS * UNHEARD

        orders = admin.get(f"/restaurants/{rid}/orders", params={"limit": 500}).json()["data"]
        by_key: dict[str, list[int]] = {}
        for order in orders:
            by_key.setdefault(order["notes"], []).append(order["id"])
        assert {key: ids for key, ids in by_key.items() if len(ids) != 1} == {}  # nothing doubled
        assert set(by_key) == set(answered)  # nothing missing, nothing unasked for
        assert all(by_key[key] == [answer["id"]] for key, answer in answered.items())

        events = admin.get(f"/restaurants/{rid}/events", params={"after": 0, "limit": 1000}).json()
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))  # gap-free
        assert len({event["id"] for event in events}) == len(events)
        new_orders = [event["data"]["order"]["id"] for event in events if event["type"] == "new_order"]
        assert sorted(new_orders) == sorted(answer["id"] for answer in answered.values())
        print(f"\n{len(answered)} keyed orders, {lost_total} answers lost to kill -9, {replayed_after_kill} replayed")
    finally:
        up.stop()
