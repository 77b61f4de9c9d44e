"""The broker's durable store (`broker/store.py`) on a real SQLite file: what is recorded is loaded back,
coalescing writes less, `after_commit` waits for the commit, a `kill -9` loses nothing committed and
leaves nothing half-written, bad files never stop the broker, and the bounds apply at load.

Issue 12 item 6: persistent sessions (subscriptions, queued and in-flight messages) and retained
messages survive a restart, clean or kill -9; the queue length and session expiry bounds still hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from broker import store
from broker.store import (
    FILE_NAME,
    Snapshot,
    SqliteJournal,
    StoredMessage,
    StoredRetained,
    StoredSession,
    StoreUnavailable,
    journal_path,
)
from tests.support import run_async

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = {"sub": "printer-1", "role": "printer", "rid": 7, "device_id": 3}
WEEK = 7 * 24 * 3600


def load(path: Path, *, expiry: int = WEEK, max_queue: int = 10_000, now: float | None = None) -> Snapshot:
    journal = SqliteJournal(path)
    snapshot = journal.load(session_expiry_seconds=expiry, max_offline_queue=max_queue, now=now)
    run_async(journal.close())
    return snapshot


def run(path: Path, record: Callable[[SqliteJournal], Awaitable[Any]]) -> SqliteJournal:
    """A journal started on a loop, `record` run, then closed (close writes what is pending)."""

    async def main() -> SqliteJournal:
        journal = SqliteJournal(path)
        journal.load(session_expiry_seconds=WEEK, max_offline_queue=10_000)
        journal.start()
        try:
            await record(journal)
        finally:
            await journal.close()
        return journal

    return run_async(main())


def committed(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """What another reader of the file sees: only committed transactions."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def damage(path: Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(sql)


def errors(reason: str) -> float:
    return REGISTRY.get_sample_value("orderbus_broker_store_errors_total", {"reason": reason}) or 0.0


def dropped_full() -> float:
    return REGISTRY.get_sample_value("orderbus_broker_dropped_messages_total", {"cause": "offline_queue_full"}) or 0.0


# --- round trips -------------------------------------------------------------------------------


def test_sessions_subscriptions_owed_messages_and_retained_come_back(tmp_path: Path):
    path = journal_path(tmp_path)

    async def record(j: SqliteJournal) -> None:
        j.session_saved("printer-1", CLAIMS, WEEK)
        j.subscribed("printer-1", "restaurant/7/printers/3/tickets", 1)
        j.subscribed("printer-1", "restaurant/7/orders/#", 0)
        j.unsubscribed("printer-1", "restaurant/7/orders/#")
        for key in (1, 2, 3):
            j.added("printer-1", key, f"restaurant/7/printers/3/tickets/{key}", b"ticket %d" % key, 1)
        j.sent("printer-1", 1, 41)  # in flight, not yet acknowledged
        await asyncio.sleep(0.05)  # the adds are committed: what follows is written in a later batch
        j.sent("printer-1", 2, 42)
        j.removed("printer-1", 3)
        j.session_saved("tablet-1", {"sub": "tablet-1", "role": "tablet", "rid": 7}, 3600)
        j.session_saved("gone", {"sub": "gone", "role": "printer"}, WEEK)
        j.added("gone", 1, "t", b"x", 1)
        await asyncio.sleep(0.05)
        j.session_deleted("gone")
        j.retained("restaurant/7/orders/open/1", b'{"id":1}', 1)
        j.retained("restaurant/7/inventory/items/2", b"{}", 0)

    started = time.time()
    run(path, record)
    snapshot = load(path)
    assert [dataclasses.replace(s, last_seen=0) for s in snapshot.sessions] == [
        StoredSession(
            "printer-1",
            CLAIMS,
            WEEK,
            {"restaurant/7/printers/3/tickets": 1},
            [
                StoredMessage(1, "restaurant/7/printers/3/tickets/1", b"ticket 1", 1, 41),
                StoredMessage(2, "restaurant/7/printers/3/tickets/2", b"ticket 2", 1, 42),
            ],
            0,
        ),
        StoredSession("tablet-1", {"sub": "tablet-1", "role": "tablet", "rid": 7}, 3600, {}, [], 0),
    ]
    assert all(started <= s.last_seen <= time.time() for s in snapshot.sessions)
    assert snapshot.retained == [
        StoredRetained("restaurant/7/inventory/items/2", b"{}", 0),
        StoredRetained("restaurant/7/orders/open/1", b'{"id":1}', 1),
    ]


def test_the_file_is_readable_by_its_owner_only(tmp_path: Path):
    """It holds message payloads and token claims, like the data directory's key."""
    path = journal_path(tmp_path)
    run(path, _record_one)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            assert Path(f"{path}{suffix}").stat().st_mode & 0o077 == 0, suffix


def test_messages_come_back_in_key_order_whatever_the_order_of_their_writes(tmp_path: Path):
    path = journal_path(tmp_path)

    async def record(j: SqliteJournal) -> None:
        j.session_saved("printer-1", CLAIMS, WEEK)
        for key in (5, 3, 10, 1):
            j.added("printer-1", key, f"t/{key}", b"", 1)
            await asyncio.sleep(0.01)

    run(path, record)
    assert [m.key for m in load(path).sessions[0].messages] == [1, 3, 5, 10]


def test_a_session_deleted_and_saved_again_in_one_batch_starts_empty(tmp_path: Path):
    """A persistent session that reconnected with CleanSession=1 and then 0 again [MQTT-3.1.2-6]."""
    path = journal_path(tmp_path)

    async def record(j: SqliteJournal) -> None:
        j.session_saved("printer-1", CLAIMS, WEEK)
        j.subscribed("printer-1", "a/b", 1)
        j.added("printer-1", 1, "a/b", b"old", 1)
        await asyncio.sleep(0.05)
        j.added("printer-1", 2, "a/b", b"old too", 1)
        j.session_deleted("printer-1")
        j.session_saved("printer-1", CLAIMS, WEEK)
        j.added("printer-1", 1, "a/b", b"new", 1)

    run(path, record)
    (session,) = load(path).sessions
    assert session.subscriptions == {} and [m.payload for m in session.messages] == [b"new"]


# --- coalescing --------------------------------------------------------------------------------


def test_an_add_then_remove_in_one_batch_writes_nothing(tmp_path: Path):
    journal = SqliteJournal(journal_path(tmp_path))
    journal.added("printer-1", 1, "t", b"x", 1)
    journal.sent("printer-1", 1, 7)
    journal.removed("printer-1", 1)
    assert journal.pending == 0
    journal.added("printer-1", 2, "t", b"x", 1)
    journal.sent("printer-1", 2, 8)
    assert journal.pending == 1, "sent merges into the add: one row written, with its packet id"
    run_async(journal.close())
    assert committed(journal.path, "SELECT key, packet_id FROM message") == [(2, 8)]


def test_a_message_added_in_an_earlier_batch_is_sent_then_removed_with_one_write(tmp_path: Path):
    journal = SqliteJournal(journal_path(tmp_path))
    journal.added("printer-1", 1, "t", b"x", 1)
    journal.sent("printer-1", 1, 7)
    run_async(journal.close())  # committed
    journal = SqliteJournal(journal.path)
    journal.sent("printer-1", 1, 9)
    journal.sent("printer-1", 1, 10)
    assert journal.pending == 1, "the later send replaces the earlier one"
    journal.removed("printer-1", 1)
    assert journal.pending == 1, "only the delete is left"
    run_async(journal.close())
    assert committed(journal.path, "SELECT * FROM message") == []


def test_a_retained_topic_set_then_cleared_in_one_batch_writes_only_the_last(tmp_path: Path):
    journal = SqliteJournal(journal_path(tmp_path))
    journal.retained("a", b"1", 1)
    journal.retained("a", b"2", 1)
    journal.retained("b", b"1", 1)
    journal.retained_cleared("a")
    assert journal.pending == 2
    journal.retained("a", b"3", 0)
    assert journal.pending == 2
    run_async(journal.close())
    assert committed(journal.path, "SELECT topic, payload, qos FROM retained ORDER BY topic") == [
        ("a", b"3", 0),
        ("b", b"1", 1),
    ]


def test_a_deleted_session_takes_its_coalescing_state_with_it(tmp_path: Path):
    """After a delete in the same batch, a remove of an old key must not cancel a re-added one."""
    journal = SqliteJournal(journal_path(tmp_path))
    journal.added("printer-1", 1, "t", b"first", 1)
    journal.session_deleted("printer-1")
    journal.session_saved("printer-1", CLAIMS, WEEK)
    journal.added("printer-1", 1, "t", b"second", 1)
    run_async(journal.close())
    assert committed(journal.path, "SELECT payload FROM message") == [(b"second",)]


# --- after_commit ------------------------------------------------------------------------------


def test_after_commit_runs_once_what_was_recorded_before_it_is_in_the_file_and_in_order(tmp_path: Path):
    path = journal_path(tmp_path)
    seen: list[tuple[str, list[tuple[Any, ...]]]] = []

    def note(name: str) -> Callable[[], None]:
        return lambda: seen.append((name, committed(path, "SELECT key FROM message ORDER BY key")))

    async def record(j: SqliteJournal) -> None:
        j.added("c", 1, "t", b"x", 1)
        j.after_commit(note("first"))
        await asyncio.sleep(0)  # the flusher may take the batch now: then what follows waits for that flush
        j.added("c", 2, "t", b"x", 1)
        j.after_commit(note("second"))
        j.after_commit(note("third"))
        while len(seen) < 3:
            await asyncio.sleep(0.005)
        j.after_commit(note("idle"))  # nothing owed: soon, on the loop, not inside the call
        assert len(seen) == 3
        await asyncio.sleep(0.01)

    journal = run(path, record)
    assert [name for name, _ in seen] == ["first", "second", "third", "idle"]
    assert seen[0][1][:1] == [(1,)]
    assert seen[1][1] == [(1,), (2,)]
    assert journal.commits >= 2


def test_a_callback_that_raises_does_not_stop_the_journal(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = journal_path(tmp_path)
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    async def record(j: SqliteJournal) -> None:
        j.added("c", 1, "t", b"x", 1)
        j.after_commit(boom)
        j.after_commit(lambda: ran.append(1))
        await asyncio.sleep(0.05)
        j.added("c", 2, "t", b"x", 1)
        j.after_commit(lambda: ran.append(2))
        await asyncio.sleep(0.05)

    before = errors("callback")
    run(path, record)
    assert ran == [1, 2]
    assert "after_commit callback failed" in caplog.text
    assert errors("callback") == before + 1


# --- kill -9 -----------------------------------------------------------------------------------

RECORDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from broker.store import SqliteJournal

    async def main():
        journal = SqliteJournal(Path(sys.argv[1]))
        journal.load(session_expiry_seconds=3600, max_offline_queue=10**6)
        journal.start()
        journal.session_saved("printer-1", {"sub": "printer-1", "role": "printer"}, 3600)
        journal.subscribed("printer-1", "tickets/#", 1)
        batch = 0
        while True:  # one logical batch per loop turn: 10 adds, the even ones of the last batch acked
            for i in range(10):
                journal.added("printer-1", batch * 10 + i, f"tickets/{batch * 10 + i}", b"x" * 200, 1)
            if batch:
                journal.sent("printer-1", (batch - 1) * 10 + 1, batch)
                for i in range(0, 10, 2):
                    journal.removed("printer-1", (batch - 1) * 10 + i)
            journal.retained(f"state/{batch % 7}", str(batch).encode(), 1)
            journal.after_commit(lambda b=batch: print(b, flush=True))
            batch += 1
            await asyncio.sleep(0)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("round_", range(3))  # the kill lands at a different point of a write each time
def test_a_kill_9_right_after_a_commit_loses_nothing_committed_and_leaves_nothing_half_written(
    tmp_path: Path, round_: int
):
    path = journal_path(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(path)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert child.stdout is not None
        acknowledged = -1
        for line in child.stdout:
            acknowledged = int(line)
            if acknowledged >= 30:  # then within a few ms, so that the kill often lands mid-transaction
                time.sleep(random.uniform(0, 0.005))
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=10)
    assert acknowledged >= 30, "the recorder never got that far"

    (session,) = load(path, expiry=3600, max_queue=10**9).sessions
    keys = [m.key for m in session.messages]
    batches = keys[-1] // 10 + 1  # whole logical batches in the file
    assert batches > acknowledged, "every batch whose after_commit ran is in the file"
    expected = [b * 10 + i for b in range(batches - 1) for i in range(1, 10, 2)]
    expected += [(batches - 1) * 10 + i for i in range(10)]
    assert keys == expected, "whole batches only: adds and the removes recorded with them"
    in_flight = {m.key: m.packet_id for m in session.messages if m.packet_id is not None}
    assert in_flight == {b * 10 + 1: b + 1 for b in range(batches - 1)}
    assert session.subscriptions == {"tickets/#": 1}
    last = batches - 1
    loaded = {r.topic: int(r.payload) for r in load(path, expiry=3600, max_queue=10**9).retained}
    assert loaded == {f"state/{b % 7}": b for b in range(max(0, last - 6), last + 1)}


# --- bad data ----------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_moved_aside_and_the_broker_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    path = journal_path(tmp_path)
    path.write_bytes(b"this is not SQLite" * 100)
    before = errors("corrupt")
    assert load(path) == Snapshot()
    assert errors("corrupt") == before + 1
    (aside,) = tmp_path.glob(f"{FILE_NAME}.bad-*")
    assert aside.read_bytes().startswith(b"this is not SQLite")
    assert "moved to" in caplog.text and "starting with no sessions" in caplog.text
    run(path, _record_one)  # the new file works
    assert len(load(path).sessions) == 1


def test_a_row_that_does_not_parse_sets_the_file_aside(tmp_path: Path):
    path = journal_path(tmp_path)
    run(path, _record_one)
    damage(path, "UPDATE session SET claims = 'not json'")
    before = errors("corrupt")
    assert load(path) == Snapshot()
    assert errors("corrupt") == before + 1
    assert len(list(tmp_path.glob(f"{FILE_NAME}.bad-*"))) == 1


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE message SET qos = 7",
        "UPDATE message SET packet_id = 0",
        "UPDATE message SET payload = 'text, not bytes'",
        "UPDATE subscription SET qos = -1",
        "UPDATE session SET claims = '[1, 2]'",
        "INSERT INTO retained VALUES ('a', x'00', 3)",
        "DELETE FROM broker_alive",
    ],
)
def test_every_kind_of_bad_row_is_caught(tmp_path: Path, sql: str):
    path = journal_path(tmp_path)
    run(path, _record_one)
    damage(path, sql)
    assert load(path) == Snapshot()


def test_a_file_of_another_schema_version_is_moved_aside(tmp_path: Path):
    path = journal_path(tmp_path)
    run(path, _record_one)
    damage(path, "UPDATE schema_version SET version = 99")
    before = errors("schema_version")
    assert load(path) == Snapshot()
    assert errors("schema_version") == before + 1


def test_a_truncated_file_never_stops_the_broker(tmp_path: Path):
    path = journal_path(tmp_path)

    async def record(j: SqliteJournal) -> None:
        j.session_saved("printer-1", CLAIMS, WEEK)
        for key in range(2000):
            j.added("printer-1", key, f"t/{key}", os.urandom(300), 1)

    run(path, record)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    snapshot = load(path)  # SQLite may or may not notice, depending on which pages were cut
    assert len(snapshot.sessions) <= 1


def test_a_file_locked_by_another_process_is_not_mistaken_for_bad_data(tmp_path: Path, monkeypatch):
    """Locked, full disk, no permission: the content may be good, so it is never moved aside; the
    broker does not start, and says why."""
    monkeypatch.setattr(store, "BUSY_MILLISECONDS", 50)
    path = journal_path(tmp_path)
    run(path, _record_one)
    damage(path, "UPDATE session SET seen_at = 0, connected = 0")  # expired: the load deletes it
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file
        with pytest.raises(StoreUnavailable, match="locked"):
            load(path)
        other.execute("ROLLBACK")
    assert list(tmp_path.glob(f"{FILE_NAME}.bad-*")) == []
    assert load(path).expired == 1


def test_a_batch_that_cannot_be_written_is_given_up_and_the_journal_goes_on(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(store, "RETRY_SECONDS", 0)
    path = journal_path(tmp_path)
    ran: list[str] = []
    before = errors("write")

    async def record(j: SqliteJournal) -> None:
        j.added("c", 2**70, "t", b"x", 1)  # no SQLite integer holds it
        j.after_commit(lambda: ran.append("poisoned"))
        await asyncio.sleep(0.2)
        j.added("c", 1, "t", b"x", 1)
        j.after_commit(lambda: ran.append("next"))
        await asyncio.sleep(0.2)

    run(path, record)
    assert ran == ["poisoned", "next"], "the broker's acknowledgements are not held up for ever"
    assert errors("write") == before + store.WRITE_ATTEMPTS
    assert "gave up writing 1 changes" in caplog.text
    assert committed(path, "SELECT key FROM message") == [(1,)]


async def _record_one(j: SqliteJournal) -> None:
    j.session_saved("printer-1", CLAIMS, WEEK)
    j.subscribed("printer-1", "a/#", 1)
    j.added("printer-1", 1, "a/b", b"x", 1)
    j.retained("a/b", b"x", 1)


# --- bounds at load ----------------------------------------------------------------------------


def test_a_session_unused_past_its_expiry_is_dropped_at_load_and_from_the_file(tmp_path: Path):
    """docs/security.md: a persistent session unused for `session_expiry_seconds` is forgotten."""
    path = journal_path(tmp_path)

    async def record(j: SqliteJournal) -> None:
        for name in ("left", "stays", "shorter"):
            j.session_saved(name, {"sub": name}, 3600 if name != "shorter" else 60)
            j.subscribed(name, "a/#", 1)
            j.added(name, 1, "a/b", b"x", 1)
        j.disconnected("left")
        j.disconnected("shorter")

    run(path, record)
    (stamp,) = committed(path, "SELECT max(seen_at) FROM session")[0]
    snapshot = load(path, expiry=3600, now=stamp + 120)
    assert [s.client_id for s in snapshot.sessions] == ["left", "stays"] and snapshot.expired == 1
    left, stays = snapshot.sessions
    (alive,) = committed(path, "SELECT at FROM broker_alive")[0]
    assert left.last_seen <= stamp < alive, "expiry counts from the disconnect..."
    assert stays.last_seen >= stamp, "... or, for a client connected at the stop, from the stop"
    later = load(path, expiry=100, now=stamp + 120)  # the limit was lowered since: it applies
    assert later.sessions == [] and later.expired == 2
    assert committed(path, "SELECT count(*) FROM session") == [(0,)]
    assert committed(path, "SELECT count(*) FROM message") == [(0,)]
    assert committed(path, "SELECT count(*) FROM subscription") == [(0,)]


def test_a_session_connected_when_the_broker_stopped_counts_from_the_stop(tmp_path: Path):
    """A printer connected for weeks when the broker was killed is not expired by its old CONNECT time."""
    path = journal_path(tmp_path)
    run(path, _record_one)
    damage(path, "UPDATE session SET seen_at = seen_at - 30 * 24 * 3600")  # connected a month ago
    (alive,) = committed(path, "SELECT at FROM broker_alive")[0]
    assert len(load(path, now=alive + 60).sessions) == 1
    assert load(path, now=alive + WEEK + 60).sessions == []


def test_at_most_max_offline_queue_messages_are_kept_the_oldest_as_the_broker_does(tmp_path: Path):
    """docs/security.md: an offline persistent session keeps at most `max_offline_queue` messages; when
    full, new ones are dropped (`offline_queue_full`). A bound lowered while the broker was down holds."""
    path = journal_path(tmp_path)

    async def record(j: SqliteJournal) -> None:
        j.session_saved("printer-1", CLAIMS, WEEK)
        for key in range(5):
            j.added("printer-1", key, f"t/{key}", b"x", 1)

    run(path, record)
    before = dropped_full()
    snapshot = load(path, max_queue=3)
    assert [m.key for m in snapshot.sessions[0].messages] == [0, 1, 2] and snapshot.dropped == 2
    assert dropped_full() == before + 2
    assert committed(path, "SELECT key FROM message ORDER BY key") == [(0,), (1,), (2,)]
