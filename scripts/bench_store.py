"""Measurement: what the broker's durable store (`broker/store.py`) costs the hot path, and what it sustains.

    python scripts/bench_store.py [--calls 200000] [--messages 100000] [--sessions 5] [--publishers 50]

1. Hook cost: ns per call of each journal hook on the event loop (no flusher running: the cost a
   delivery pays, nothing else).
2. Flush throughput: one producer routes `--messages` QoS 1 messages of 100 bytes to `--sessions`
   offline persistent sessions (one `added` each) in bursts of 100 per loop turn, while the flusher
   writes behind; then every message is acknowledged (`removed`). Reported: changes/s written,
   transactions, mean changes per transaction (group commit), and the wall time.
3. Commit latency: `after_commit` after one `added`, idle and under the open-loop flood of (2).
4. Closed loop, as the broker runs it: `--publishers` QoS 1 publishers each wait for their PUBACK
   (`after_commit`) before publishing again, and the subscribers acknowledge 2 ms later.
   Reported: messages/s, transactions/s and the PUBACK's wait (median, p95).

A measurement, not a test: it prints numbers and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from broker.store import SqliteJournal, journal_path
from core import topics

PAYLOAD = b"x" * 100
TICKETS = topics.tickets(1, "grill")
ACK_SECONDS = 0.002


def _since(latencies: list[float], asked: float) -> None:
    latencies.append(time.perf_counter() - asked)


def hook_costs(calls: int, directory: Path) -> None:
    journal = SqliteJournal(journal_path(directory / "hooks"))
    cases: list[tuple[str, Callable[[int], None]]] = [
        ("added", lambda i: journal.added("printer-1", i, TICKETS, PAYLOAD, 1)),
        ("sent (merged into its add)", lambda i: journal.sent("printer-1", i, i % 65535 + 1)),
        ("removed (cancels its add)", lambda i: journal.removed("printer-1", i)),
        ("removed (added earlier)", lambda i: journal.removed("printer-2", i)),
        ("retained", lambda i: journal.retained(topics.open_order(1, i % 500), PAYLOAD, 1)),
        ("subscribed", lambda i: journal.subscribed("printer-1", TICKETS, 1)),
        ("session_saved", lambda i: journal.session_saved("printer-1", {"sub": "printer-1", "role": "printer"}, 60)),
    ]
    print(f"1. hook cost, {calls:,} calls each (ns per call, on the loop, no I/O)")
    for name, call in cases:
        started = time.perf_counter_ns()
        for i in range(calls):
            call(i)
        elapsed = time.perf_counter_ns() - started
        print(f"   {name:<28} {elapsed / calls:7.0f} ns")
        if not name.startswith(("added", "sent")):
            journal._take()  # what a flush would take; not written here


async def throughput(messages: int, sessions: int, directory: Path) -> None:
    journal = SqliteJournal(journal_path(directory / "flush"))
    journal.load(session_expiry_seconds=3600, max_offline_queue=10**9)
    journal.start()
    clients = [f"printer-{n}" for n in range(sessions)]
    for client in clients:
        journal.session_saved(client, {"sub": client, "role": "printer"}, 3600)
    latencies: list[float] = []
    done = asyncio.Event()
    commits_before, started = journal.commits, time.perf_counter()
    for first in range(0, messages, 100):  # a burst per loop turn: the broker reads and routes a chunk at a time
        for key in range(first, min(first + 100, messages)):
            for client in clients:
                journal.added(client, key, TICKETS, PAYLOAD, 1)
        if first % 5000 == 0:
            asked = time.perf_counter()
            journal.after_commit(partial(_since, latencies, asked))
        await asyncio.sleep(0)
    journal.after_commit(done.set)
    await done.wait()
    added_seconds, added_commits = time.perf_counter() - started, journal.commits - commits_before
    for key in range(messages):
        for client in clients:
            journal.removed(client, key)
        if key % 100 == 99:
            await asyncio.sleep(0)
    done.clear()
    journal.after_commit(done.set)
    await done.wait()
    total_seconds, total_commits = time.perf_counter() - started, journal.commits - commits_before
    changes = 2 * messages * sessions
    print(f"2. flush throughput: {messages:,} messages x {sessions} persistent sessions, then acknowledged")
    print(f"   added: {messages * sessions / added_seconds:,.0f} rows/s, {added_commits} transactions")
    print(
        f"   all:   {changes / total_seconds:,.0f} changes/s, {total_commits} transactions, "
        f"{changes / max(total_commits, 1):,.0f} changes per transaction, {total_seconds:.2f} s"
    )
    under_load = sorted(latencies)
    idle: list[float] = []
    for key in range(50):
        journal.added("printer-0", messages + key, "t", PAYLOAD, 1)
        asked = time.perf_counter()
        done.clear()
        journal.after_commit(done.set)
        await done.wait()
        idle.append(time.perf_counter() - asked)
        await asyncio.sleep(0.005)
    await journal.close()
    print("3. after_commit latency (what a PUBACK waits for)")
    print(f"   idle:               median {statistics.median(idle) * 1e3:.2f} ms, max {max(idle) * 1e3:.2f} ms")
    if under_load:
        print(
            f"   open-loop flood (2): median {statistics.median(under_load) * 1e3:.0f} ms, "
            f"max {under_load[-1] * 1e3:.0f} ms: nothing paces a producer that never waits"
        )


async def closed_loop(publishers: int, sessions: int, seconds: float, directory: Path) -> None:
    """QoS 1 publishers as the broker sees them: each waits for its PUBACK (after_commit) before the
    next publish; each message goes to `sessions` persistent subscribers, who acknowledge it ACK_SECONDS
    later (a LAN round trip: the add and its remove often fall in different batches)."""
    journal = SqliteJournal(journal_path(directory / "closed"))
    journal.load(session_expiry_seconds=3600, max_offline_queue=10**9)
    journal.start()
    clients = [f"printer-{n}" for n in range(sessions)]
    latencies: list[float] = []
    keys = iter(range(10**12))
    deadline = time.perf_counter() + seconds
    loop = asyncio.get_running_loop()

    def acknowledge(key: int) -> None:  # the subscribers' PUBACKs
        for client in clients:
            journal.removed(client, key)

    async def publisher() -> None:
        while time.perf_counter() < deadline:
            key = next(keys)
            for client in clients:
                journal.added(client, key, TICKETS, PAYLOAD, 1)
            asked = time.perf_counter()
            puback: asyncio.Future[None] = loop.create_future()
            journal.after_commit(partial(puback.set_result, None))
            loop.call_later(ACK_SECONDS, acknowledge, key)
            await puback
            latencies.append(time.perf_counter() - asked)

    commits_before, started = journal.commits, time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(publishers)))
    elapsed, commits = time.perf_counter() - started, journal.commits - commits_before
    await journal.close()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95)]
    print(
        f"4. closed loop: {publishers} QoS 1 publishers, each waiting for its PUBACK; {sessions} persistent subscribers"
    )
    print(
        f"   {len(latencies) / elapsed:,.0f} messages/s, {commits / elapsed:,.0f} transactions/s, "
        f"PUBACK wait median {statistics.median(latencies) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--publishers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        hook_costs(args.calls, directory)
        asyncio.run(throughput(args.messages, args.sessions, directory))
        asyncio.run(closed_loop(args.publishers, args.sessions, args.seconds, directory))


if __name__ == "__main__":
    main()
