"""The broker's durable state: persistent sessions and retained messages in `<data_dir>/broker.sqlite3`.

Why a journal and not a snapshot: a restart — clean or `kill -9` — must not lose what a printer or a
tablet was owed (its subscriptions, its queued and in-flight QoS 1/2 messages), nor the retained state.
The broker tells the journal every change as it happens (`broker.delivery.Journal` hooks), and the
journal writes them behind the hot path:

- **Hooks are cheap and synchronous.** Each appends one tuple to an in-memory batch on the event loop;
  no I/O, no task, no lock. Only persistent (CleanSession=0) sessions are journaled.
- **Group commit.** One flusher writes the whole batch in one transaction in a worker thread
  (`asyncio.to_thread`), and starts the next as soon as the previous one has committed; under load a
  batch holds everything recorded while the previous one was being written, so the cost per change
  falls as the rate rises. The window of changes not yet durable is one batch being written plus the
  one being gathered: a few milliseconds of traffic.
- **Coalescing.** Inside one batch, a message added and then removed (acknowledged, or dropped) writes
  nothing; a message added then sent is written once, with its packet id; a retained topic set and then
  set or cleared again writes only the last.
- **`after_commit(callback)`** runs `callback` on the loop once everything recorded before the call is
  committed. The broker sends the PUBACK of a QoS 1 PUBLISH it queued for a persistent session only
  then: a publisher that got its PUBACK never loses the message to a crash.

Durability: the file is in WAL mode with `synchronous=NORMAL`. A commit has reached the operating
system when it returns, so it survives the broker's process being killed (`kill -9`, OOM, a crash);
after a power cut or an OS crash the last commits may be missing (never a half-written one: a
transaction is in the file whole or not at all). `synchronous=FULL` would fsync every commit, at a
cost per batch the hot path does not need for the failure it guards against (docs/ops.md).

Loading (`load`) applies the bounds of docs/security.md again, since they may have changed while the
broker was down: a session unused for longer than its expiry is dropped, and a session holds at most
`max_offline_queue` pending messages — the oldest are kept and newer ones dropped, the rule the broker
applies when the queue fills (counted as `offline_queue_full`). Bad data never stops the broker: a
file SQLite cannot read, of another schema version, or with a row that does not parse, is moved aside
(`broker.sqlite3.bad-<time>`, with its WAL), logged and counted, and the broker starts empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import delivery
from broker.stats import DROPPED, STORE_ERRORS

log = logging.getLogger("orderbus.broker.store")

FILE_NAME = "broker.sqlite3"
SCHEMA_VERSION = 1
HEARTBEAT_SECONDS = 60.0  # how often an idle journal notes that the broker is alive (expiry of live sessions)
WRITE_ATTEMPTS = 3  # a batch that fails this often is given up (logged and counted); the broker goes on
RETRY_SECONDS = 0.5
BUSY_MILLISECONDS = 5000  # how long to wait for a lock another process holds (a backup reading it, say)

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    # when the broker was last known to run: a session connected at a kill was last seen then
    "CREATE TABLE broker_alive (at REAL NOT NULL)",
    """CREATE TABLE session (
        client_id TEXT PRIMARY KEY,
        claims TEXT NOT NULL,
        expires_after INTEGER NOT NULL,
        connected INTEGER NOT NULL,
        seen_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE subscription (
        client_id TEXT NOT NULL,
        filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        PRIMARY KEY (client_id, filter)
    ) WITHOUT ROWID""",
    """CREATE TABLE message (
        client_id TEXT NOT NULL,
        key INTEGER NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        packet_id INTEGER,
        PRIMARY KEY (client_id, key)
    ) WITHOUT ROWID""",
    "CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL) WITHOUT ROWID",
)

# One statement per kind of change; a batch is a list of (kind, parameters), None where coalesced away.
_SAVE, _LEFT, _DELETE, _SUB, _UNSUB, _ADD, _SENT, _REMOVE, _RETAIN, _CLEAR = range(10)
_SQL = {
    _SAVE: "INSERT INTO session (client_id, claims, expires_after, connected, seen_at) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT (client_id) DO UPDATE SET claims = excluded.claims, expires_after = excluded.expires_after, "
    "connected = 1, seen_at = excluded.seen_at",
    _LEFT: "UPDATE session SET connected = 0, seen_at = ? WHERE client_id = ?",
    _SUB: "INSERT OR REPLACE INTO subscription (client_id, filter, qos) VALUES (?, ?, ?)",
    _UNSUB: "DELETE FROM subscription WHERE client_id = ? AND filter = ?",
    _ADD: "INSERT OR REPLACE INTO message (client_id, key, topic, payload, qos, packet_id) VALUES (?, ?, ?, ?, ?, ?)",
    _SENT: "UPDATE message SET packet_id = ? WHERE client_id = ? AND key = ?",
    _REMOVE: "DELETE FROM message WHERE client_id = ? AND key = ?",
    _RETAIN: "INSERT OR REPLACE INTO retained (topic, payload, qos) VALUES (?, ?, ?)",
    _CLEAR: "DELETE FROM retained WHERE topic = ?",
}
_DELETE_SESSION = (
    "DELETE FROM message WHERE client_id = ?",
    "DELETE FROM subscription WHERE client_id = ?",
    "DELETE FROM session WHERE client_id = ?",
)

Op = tuple[int, tuple[Any, ...]]


class BadData(Exception):
    """The file holds something this code cannot use; it is moved aside."""


class StoreUnavailable(RuntimeError):
    """The file cannot be used for a reason that is not its content (locked by another process, a full
    disk, no permission): moving it aside would lose good data, so the broker does not start."""


# SQLite's answers that say something about the machine, not about the file's content
_ENVIRONMENT = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_PERM",
    "SQLITE_NOMEM",
    "SQLITE_AUTH",
)


def _bad_data(exc: Exception) -> bool:
    name = getattr(exc, "sqlite_errorname", None)
    return not (isinstance(name, str) and name.startswith(_ENVIRONMENT))


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message owed to a session: queued (`packet_id` None) or sent and not yet acknowledged."""

    key: int  # orders a session's messages
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None


@dataclass(frozen=True, slots=True)
class StoredSession:
    client_id: str
    claims: dict[str, Any]  # the token's claims at its last CONNECT: the grants are derived from them again
    expires_after: int  # seconds unused before the session is forgotten
    subscriptions: dict[str, int]  # filter -> granted QoS
    messages: list[StoredMessage]  # in key order
    last_seen: float  # wall clock: its client's disconnect, or the broker's stop if it was connected then


@dataclass(frozen=True, slots=True)
class StoredRetained:
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True)
class Snapshot:
    sessions: list[StoredSession] = field(default_factory=list)
    retained: list[StoredRetained] = field(default_factory=list)
    expired: int = 0  # sessions dropped at load: unused for longer than their expiry
    dropped: int = 0  # messages dropped at load: beyond max_offline_queue


def for_broker(snapshot: Snapshot) -> delivery.Snapshot:
    """What `OrderbusBroker.restore` takes."""
    return delivery.Snapshot(
        sessions=[
            delivery.SessionSnapshot(
                session.client_id,
                session.claims,
                subscriptions=list(session.subscriptions.items()),
                pending=[delivery.Pending(m.key, m.topic, m.payload, m.qos, m.packet_id) for m in session.messages],
                disconnected_at=session.last_seen,
            )
            for session in snapshot.sessions
        ],
        retained=[(r.topic, r.payload, r.qos) for r in snapshot.retained],
    )


def journal_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


class SqliteJournal:
    """`broker.delivery.Journal` on SQLite, write-behind with group commit (see the module docstring).

    Use: `snapshot = journal.load(...)` (before the broker starts; optional), `journal.start()` (on the
    running loop), the hooks, then `await journal.close()`, which writes what is still pending.
    """

    def __init__(self, path: Path, *, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.path = path
        self._heartbeat = heartbeat_seconds
        self._db: sqlite3.Connection | None = None
        self._ops: list[Op | None] = []
        self._callbacks: list[Callable[[], object]] = []
        # where, in the batch being gathered, a message's add / send / a topic's retain is (for coalescing)
        self._added: dict[tuple[str, int], int] = {}
        self._sent: dict[tuple[str, int], int] = {}
        self._retains: dict[str, int] = {}
        self._flushing = False  # a batch is being written
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0  # transactions written (for tests and the measurement script)

    @property
    def pending(self) -> int:
        """Changes recorded and not yet handed to a flush (what coalescing left of them)."""
        return sum(op is not None for op in self._ops)

    # --- hooks: on the event loop, no I/O ------------------------------------------------------

    def session_saved(self, client_id: str, claims: dict[str, Any], expires_after: int) -> None:
        """A persistent session connected (created or resumed) with these claims."""
        self._append((_SAVE, (client_id, dict(claims), expires_after, time.time())))

    def disconnected(self, client_id: str) -> None:
        """A persistent session's client left: its expiry counts from now."""
        self._append((_LEFT, (time.time(), client_id)))

    def session_deleted(self, client_id: str) -> None:
        for index in (*self._pop_client(self._added, client_id), *self._pop_client(self._sent, client_id)):
            self._ops[index] = None
        self._append((_DELETE, (client_id,)))

    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._append((_SUB, (client_id, topic_filter, qos)))

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        self._append((_UNSUB, (client_id, topic_filter)))

    def added(self, client_id: str, key: int, topic: str, payload: bytes, qos: int) -> None:
        self._added[client_id, key] = len(self._ops)
        self._append((_ADD, (client_id, key, topic, payload, qos, None)))

    def sent(self, client_id: str, key: int, packet_id: int) -> None:
        index = self._added.get((client_id, key))
        if index is not None:  # added in this batch: written once, with its packet id
            op = self._ops[index]
            assert op is not None
            self._ops[index] = (_ADD, (*op[1][:5], packet_id))
            return
        previous = self._sent.get((client_id, key))
        if previous is not None:
            self._ops[previous] = None
        self._sent[client_id, key] = len(self._ops)
        self._append((_SENT, (packet_id, client_id, key)))

    def removed(self, client_id: str, key: int) -> None:
        index = self._added.pop((client_id, key), None)
        if index is not None:  # never written: nothing to write
            self._ops[index] = None
            return
        sent = self._sent.pop((client_id, key), None)
        if sent is not None:
            self._ops[sent] = None
        self._append((_REMOVE, (client_id, key)))

    def retained(self, topic: str, payload: bytes, qos: int) -> None:
        self._replace_retained(topic, (_RETAIN, (topic, payload, qos)))

    def retained_cleared(self, topic: str) -> None:
        self._replace_retained(topic, (_CLEAR, (topic,)))

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop once everything recorded before this call is committed."""
        if not self._ops and not self._callbacks and not self._flushing and self._loop is not None:
            self._loop.call_soon(callback)  # nothing is owed to the file
            return
        self._callbacks.append(callback)
        self._poke()

    def _append(self, op: Op) -> None:
        self._ops.append(op)
        if len(self._ops) == 1:
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._flushing:
            self._wake.set()

    def _replace_retained(self, topic: str, op: Op) -> None:
        previous = self._retains.get(topic)
        if previous is not None:
            self._ops[previous] = None
        self._retains[topic] = len(self._ops)
        self._append(op)

    @staticmethod
    def _pop_client(index: dict[tuple[str, int], int], client_id: str) -> list[int]:
        """Rare (a persistent session ends): a scan is fine."""
        keys = [k for k in index if k[0] == client_id]
        return [index.pop(k) for k in keys]

    def _take(self) -> tuple[list[Op | None], list[Callable[[], object]]]:
        ops, callbacks = self._ops, self._callbacks
        self._ops, self._callbacks = [], []
        self._added, self._sent, self._retains = {}, {}, {}
        return ops, callbacks

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher on the running loop (after `load`, or on a file never loaded)."""
        if self._db is None:
            self._db = self._open_or_set_aside()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="orderbus-broker-journal")
        if self._ops or self._callbacks:
            self._wake.set()

    async def close(self) -> None:
        """Write what is pending, then close the file."""
        self._closing = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            await self._task
            self._task = None
        if self._ops or self._callbacks:  # never started: write synchronously
            if self._db is None:
                self._db = self._open_or_set_aside()
            ops, callbacks = self._take()
            self._write(ops)
            for callback in callbacks:
                callback()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._write([])  # the moment of a clean stop: sessions still connected were last seen now
            self._db.close()
            self._db = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._ops and not self._callbacks:
                if self._closing:
                    return
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._heartbeat)
                except TimeoutError:
                    await self._commit([])  # the heartbeat: the broker was alive now
                continue
            ops, callbacks = self._take()
            self._flushing = True
            try:
                if any(op is not None for op in ops):
                    await self._commit(ops)
            finally:
                self._flushing = False
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    STORE_ERRORS.labels(reason="callback").inc()
                    log.exception("after_commit callback failed")

    async def _commit(self, ops: list[Op | None]) -> None:
        """One transaction, retried a few times; a batch that cannot be written is given up so the
        broker goes on (its callbacks still run: the broker answers, without the durability)."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await asyncio.to_thread(self._write, ops)
                return
            except Exception as exc:  # sqlite3.Error, or a value SQLite cannot hold: the flusher must live on
                STORE_ERRORS.labels(reason="write").inc()
                if attempt == WRITE_ATTEMPTS:
                    log.error("broker store: gave up writing %d changes to %s (%s)", len(ops), self.path, exc)
                    return
                log.warning("broker store: write to %s failed (%s); retrying", self.path, exc)
                await asyncio.sleep(RETRY_SECONDS * attempt)

    def _write(self, ops: Iterable[Op | None]) -> None:
        """In a worker thread (one at a time). Runs of the same statement go through one executemany."""
        db = self._db
        assert db is not None
        db.execute("BEGIN")
        try:
            kind, rows = -1, list[tuple[Any, ...]]()
            for op in ops:
                if op is None:
                    continue
                if op[0] != kind:
                    _execute(db, kind, rows)
                    kind, rows = op[0], []
                rows.append(op[1])
            _execute(db, kind, rows)
            db.execute("UPDATE broker_alive SET at = ?", (time.time(),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.commits += 1

    # --- loading -------------------------------------------------------------------------------

    def load(self, *, session_expiry_seconds: int, max_offline_queue: int, now: float | None = None) -> Snapshot:
        """The sessions and retained messages of the last run, bounds applied (and what they dropped
        deleted from the file). A file that cannot be read is moved aside: the broker starts empty."""
        now = time.time() if now is None else now
        if self._db is not None:
            raise RuntimeError("load() once, before start()")
        db = self._open_or_set_aside()
        try:
            snapshot = _read(db, session_expiry_seconds, max_offline_queue, now)
        except (sqlite3.DatabaseError, BadData, ValueError, TypeError) as exc:
            db.close()
            if not _bad_data(exc):
                raise StoreUnavailable(f"cannot use {self.path}: {exc}") from exc
            self._set_aside(exc)
            self._db = self._open_or_set_aside()
            return Snapshot()
        self._db = db
        if snapshot.expired or snapshot.dropped:
            log.warning(
                "broker store: %d sessions expired, %d queued messages beyond max_offline_queue=%d dropped",
                snapshot.expired,
                snapshot.dropped,
                max_offline_queue,
            )
        if snapshot.dropped:
            DROPPED.labels(cause="offline_queue_full").inc(snapshot.dropped)
        log.info(
            "broker store: %d sessions (%d messages owed) and %d retained messages loaded from %s",
            len(snapshot.sessions),
            sum(len(s.messages) for s in snapshot.sessions),
            len(snapshot.retained),
            self.path,
        )
        return snapshot

    def _open_or_set_aside(self) -> sqlite3.Connection:
        try:
            return _open(self.path)
        except (sqlite3.DatabaseError, BadData) as exc:
            if not _bad_data(exc):
                raise StoreUnavailable(f"cannot use {self.path}: {exc}") from exc
            self._set_aside(exc)
            return _open(self.path)

    def _set_aside(self, exc: Exception) -> None:
        reason = "schema_version" if isinstance(exc, BadData) and "schema version" in str(exc) else "corrupt"
        STORE_ERRORS.labels(reason=reason).inc()
        aside = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):  # the WAL belongs to the file: left behind, it would be replayed
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.replace(Path(f"{aside}{suffix}"))
        log.error(
            "broker store: %s is unusable (%s: %s); moved to %s, starting with no sessions and no retained messages",
            self.path,
            type(exc).__name__,
            exc,
            aside,
        )


def _execute(db: sqlite3.Connection, kind: int, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if kind == _DELETE:
        for statement in _DELETE_SESSION:
            db.executemany(statement, rows)
    elif kind == _SAVE:
        db.executemany(_SQL[kind], [(c, json.dumps(claims), e, t) for c, claims, e, t in rows])
    else:
        db.executemany(_SQL[kind], rows)


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # message payloads and token claims: the owner's only
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # (SQLite gives its WAL the same)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout={int(BUSY_MILLISECONDS)}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                raise BadData(f"unknown tables {sorted(tables)} and no schema version")
            db.execute("BEGIN")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            db.execute("INSERT INTO broker_alive VALUES (?)", (time.time(),))
            db.execute("COMMIT")
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
        if versions != [SCHEMA_VERSION]:
            raise BadData(f"schema version {versions}, this broker reads {SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def _read(db: sqlite3.Connection, expiry_limit: int, max_queue: int, now: float) -> Snapshot:
    (alive_at,) = db.execute("SELECT at FROM broker_alive").fetchone()
    _check(isinstance(alive_at, float | int), "broker_alive")
    sessions: dict[str, tuple[dict[str, Any], int, float]] = {}
    expired: list[str] = []
    for client_id, claims_text, expires_after, connected, seen_at in db.execute("SELECT * FROM session"):
        _check(isinstance(client_id, str) and isinstance(claims_text, str), "session")
        _check(isinstance(expires_after, int) and connected in (0, 1), "session")
        _check(isinstance(seen_at, float | int), "session")
        claims = json.loads(claims_text)
        _check(isinstance(claims, dict), "session claims")
        since = max(seen_at, alive_at) if connected else seen_at  # connected at the stop: seen until then
        if now - since > min(expires_after, expiry_limit):
            expired.append(client_id)
        else:
            sessions[client_id] = (claims, expires_after, since)
    subscriptions: dict[str, dict[str, int]] = {c: {} for c in sessions}
    for client_id, topic_filter, qos in db.execute("SELECT client_id, filter, qos FROM subscription"):
        _check(isinstance(topic_filter, str) and qos in (0, 1, 2), "subscription")
        if client_id in subscriptions:
            subscriptions[client_id][topic_filter] = qos
    messages: dict[str, list[StoredMessage]] = {c: [] for c in sessions}
    beyond: list[tuple[str, int]] = []
    rows = db.execute("SELECT client_id, key, topic, payload, qos, packet_id FROM message ORDER BY client_id, key")
    for client_id, key, topic, payload, qos, packet_id in rows:
        _check(isinstance(key, int) and isinstance(topic, str) and isinstance(payload, bytes), "message")
        _check(
            qos in (0, 1, 2) and (packet_id is None or (isinstance(packet_id, int) and 0 < packet_id < 65536)),
            "message",
        )
        owed = messages.get(client_id)
        if owed is None:
            continue  # its session expired (or is gone): deleted below
        if len(owed) >= max_queue:
            beyond.append((client_id, key))
            continue
        owed.append(StoredMessage(key, topic, payload, qos, packet_id))
    retained = []
    for topic, payload, qos in db.execute("SELECT topic, payload, qos FROM retained ORDER BY topic"):
        _check(isinstance(topic, str) and isinstance(payload, bytes) and qos in (0, 1, 2), "retained")
        retained.append(StoredRetained(topic, payload, qos))
    orphans = [(c,) for (c,) in db.execute("SELECT DISTINCT client_id FROM message") if c not in sessions]
    orphans += [(c,) for (c,) in db.execute("SELECT DISTINCT client_id FROM subscription") if c not in sessions]
    if expired or beyond or orphans:  # the file says what memory will hold
        db.execute("BEGIN")
        for statement in _DELETE_SESSION:
            db.executemany(statement, [(c,) for c in expired] + orphans)
        db.executemany(_SQL[_REMOVE], beyond)
        db.execute("COMMIT")
    stored = [
        StoredSession(client_id, claims, expires_after, subscriptions[client_id], messages[client_id], since)
        for client_id, (claims, expires_after, since) in sorted(sessions.items())
    ]
    return Snapshot(stored, retained, expired=len(expired), dropped=len(beyond))


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise BadData(f"a {what} row does not parse")
