"""The bridge lease: exactly one `orderbus bridge` (or `orderbus up`) at a time runs the relay, the
ingest and the sweeper; the others wait as standbys and take over within a couple of seconds of its
death.

Why a lease at all: the relay and the ingest connect with fixed client ids (`orderbus-relay`, the
ingest's persistent session `orderbus-ingest`), so two active bridges take each other's sessions
every second, and two relays would publish a restaurant's events out of order and twice.

- PostgreSQL: `pg_try_advisory_lock(KEY)` on a connection of its own (autocommit). The lock lives and
  dies with that connection, whichever way it ends (kill -9, a crash, `pg_terminate_backend`, a lost
  network), so the holder checks the connection every second and before every relay batch
  (`LeaseKeeper.still_held`): once it is gone a standby may hold the lock already, and the holder
  stops publishing at once (fencing) and goes back to standby.
- SQLite (one machine): `flock` on `<data_dir>/bridge.lock`; the kernel releases it when the process
  dies, kill -9 included.

`KEY` derives from the fixed name "orderbus bridge": every bridge of one database competes for the
same lock, and other deployments on the same PostgreSQL server (other databases) do not, since
advisory locks are per database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from bridge.metrics import (
    BRIDGE_ACTIVE,
    BRIDGE_LEASE_ERRORS,
    BRIDGE_LEASE_LOST,
    BRIDGE_START_FAILURES,
    BRIDGE_TAKEOVERS,
)

log = logging.getLogger("orderbus.bridge")

LEASE_NAME = "orderbus bridge"
KEY = int.from_bytes(hashlib.sha256(LEASE_NAME.encode()).digest()[:8], "big", signed=True)  # a bigint
LOCK_FILE = "bridge.lock"
RETRY_SECONDS = 0.5  # a standby's attempts: a dead holder is replaced within about this
CHECK_SECONDS = 1.0  # the holder's liveness check of its lease (also done before every relay batch)


class LeaseUnavailable(RuntimeError):
    """The lease could not even be asked for (the database does not answer); a standby tries again."""


class Lease(Protocol):
    def try_acquire(self) -> bool:
        """True when this process now holds the lease (or already did); False when another holds it."""
        ...

    def check(self) -> bool:
        """True while the lease is still ours; once False it stays so until `try_acquire` succeeds."""
        ...

    def release(self) -> None: ...


class PostgresLease:
    """A session-level advisory lock on a dedicated autocommit connection (psycopg 3).

    TCP keepalives and `tcp_user_timeout` bound how long a check can hang on a silent network, so a
    holder cut off from the server notices within seconds rather than at the kernel's default."""

    def __init__(self, engine: Engine, key: int = KEY) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._key = key
        self._conn: Any = None  # psycopg.Connection, imported lazily: PostgreSQL is an optional extra
        self._held = False
        self._lock = threading.Lock()  # the keeper's thread and the relay's (fence) share the connection

    @property
    def backend_pid(self) -> int | None:
        """The server process holding (or asking for) the lock: what an operator would terminate."""
        with self._lock:
            return None if self._conn is None else int(self._conn.info.backend_pid)

    def try_acquire(self) -> bool:
        import psycopg

        with self._lock:
            if self._held:
                return self._alive()
            try:
                if self._conn is None:
                    self._conn = psycopg.connect(
                        self._conninfo,
                        autocommit=True,
                        connect_timeout=5,
                        application_name="orderbus bridge lease",
                        keepalives=1,
                        keepalives_idle=2,
                        keepalives_interval=1,
                        keepalives_count=2,
                        tcp_user_timeout=3000,
                    )
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            except psycopg.Error as exc:
                self._close()
                raise LeaseUnavailable(f"cannot ask PostgreSQL for the bridge lease: {_first_line(exc)}") from exc
            self._held = bool(row and row[0])
            return self._held

    def check(self) -> bool:
        with self._lock:
            return self._held and self._alive()

    def _alive(self) -> bool:
        """The lock is ours as long as the connection that took it is: one round trip proves that."""
        import psycopg

        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as exc:
            log.warning("bridge lease connection lost (%s)", _first_line(exc))
            self._held = False
            self._close()
            return False
        return True

    def release(self) -> None:
        with self._lock:
            self._held = False
            self._close()  # ending the session releases the lock: no unlock round trip that could hang

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                conn.close()


class FileLease:
    """`flock` on a file in the data directory, for bridges of one SQLite database on one machine.

    `flock` (not `lockf`) locks an open file description, so two leases conflict within one process
    too. The check also notices the file replaced or deleted under us (a new lock file would let a
    second bridge in)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._fd is not None:
                return self._ours()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise LeaseUnavailable(f"cannot open the bridge lock file {self.path}: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def check(self) -> bool:
        with self._lock:
            return self._fd is not None and self._ours()

    def _ours(self) -> bool:
        assert self._fd is not None
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except OSError:
            same = False
        if not same:
            log.warning("bridge lock file %s was replaced or removed; giving the lease up", self.path)
            self._close()
        return same

    def release(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock


def lease_for(engine: Engine, data_dir: Path) -> Lease:
    """The advisory lock on PostgreSQL, the data directory's lock file on SQLite."""
    if engine.dialect.name == "postgresql":
        return PostgresLease(engine)
    return FileLease(data_dir / LOCK_FILE)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class LeaseKeeper:
    """Holds the lease for this process and runs the bridge's parts while it does.

    `activate()` starts them when the lease is gained; `deactivate(graceful)` stops them: graceful at
    a clean stop (the relay drains), not when the lease was lost (the relay stops publishing at once,
    since a standby may hold the lease already). One log line and one metric per change."""

    def __init__(
        self,
        lease: Lease,
        activate: Callable[[], None],
        deactivate: Callable[[bool], None],
        *,
        retry_seconds: float = RETRY_SECONDS,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.lease = lease
        self._activate, self._deactivate = activate, deactivate
        self._retry, self._check = retry_seconds, check_seconds
        self._stopping = threading.Event()
        self._lost = threading.Event()  # a failed fence check: stand down now, not at the next check
        self._thread: threading.Thread | None = None
        self.active = False
        self._standby_logged = False
        self._unavailable: str | None = None  # the last reason the lease could not be asked for, logged once

    def start(self) -> None:
        """One attempt now (so `orderbus up` has its relay when `start` returns), then a thread."""
        self._attempt()
        self._thread = threading.Thread(target=self._run, name="bridge-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the parts (graceful: the relay drains while the lease is still held), then release."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.active:
            self.active = False
            BRIDGE_ACTIVE.set(0)
            self._deactivate(True)
        self.lease.release()

    def still_held(self) -> bool:
        """The relay's fence before each batch: a round trip on the lease's own connection."""
        if self._lost.is_set():
            return False
        if self.lease.check():
            return True
        self._lost.set()  # the keeper's thread stands down at once
        return False

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.active:
                self._lost.wait(self._check)
                if self._stopping.is_set():
                    return
                if not self.still_held():
                    self._stand_down()
                    # the others first: a holder that just lost its connection is the least healthy
                    self._stopping.wait(2 * self._retry)
            else:
                if self._stopping.wait(self._retry):
                    return
                self._attempt()

    def _attempt(self) -> None:
        try:
            held = self.lease.try_acquire()
        except LeaseUnavailable as exc:
            BRIDGE_LEASE_ERRORS.inc()
            if str(exc) != self._unavailable:
                self._unavailable = str(exc)
                log.warning("bridge standby: %s; retrying every %g s", exc, self._retry)
            return
        self._unavailable = None
        if not held:
            if not self._standby_logged:
                self._standby_logged = True
                log.info("bridge standby: another holds the lease")
            return
        self._lost.clear()
        self.active, self._standby_logged = True, False
        BRIDGE_TAKEOVERS.inc()
        BRIDGE_ACTIVE.set(1)
        log.info("bridge active: this process holds the lease and runs the relay, ingest and sweeper")
        try:
            self._activate()
        except Exception:  # whatever failed, the lease goes to a bridge that can run the parts
            BRIDGE_START_FAILURES.inc()
            log.exception("bridge parts failed to start; giving the lease up")
            self._stand_down()

    def _stand_down(self) -> None:
        self.active = False
        BRIDGE_LEASE_LOST.inc()
        BRIDGE_ACTIVE.set(0)
        log.warning("bridge standby: the lease was lost; stopping the relay, ingest and sweeper")
        try:
            self._deactivate(False)
        finally:
            self.lease.release()  # a half-dead connection must not keep the lock from the others
            self._lost.clear()
