"""The wake channel, listening side: events committed by another process wake this process's relay.

`core.wake` sends; this listens, on a thread of its own, and calls `on_wake` (the relay's
`wake`, a `threading.Event.set`) for each signal. On SQLite the relay binds the UNIX datagram
socket `<data_dir>/relay.sock`: one relay per data directory (a second one takes the socket over,
and the first then finds events by polling only). On PostgreSQL it `LISTEN`s on
`orderbus_outbox`, reconnecting after a lost connection and waking the relay once it is back
(a notification sent meanwhile is lost). Whatever goes wrong here is logged and leaves the
relay's idle poll to find the events: a wake is a shortcut, never the only way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from core.wake import CHANNEL, MAX_SOCKET_PATH, SOCKET_NAME, socket_path_fits

log = logging.getLogger("orderbus.wake")
RECONNECT_SECONDS = 1.0


class WakeListener(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class SocketListener:
    """Binds `path` (replacing a socket file left by a relay that was killed) and calls `on_wake`
    for every datagram. `listening` is False when it could not bind: the relay polls."""

    def __init__(self, path: Path, on_wake: Callable[[], None]) -> None:
        self.path = path
        self._on_wake = on_wake
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        self._sock = self._bind()
        if self._sock is None:
            return
        self._thread = threading.Thread(target=self._run, name="relay-wake", daemon=True)
        self._thread.start()

    def _bind(self) -> socket.socket | None:
        if not socket_path_fits(self.path):
            log.warning(
                "data directory path too long for the relay's wake socket (%d > %d bytes): %s; "
                "the relay finds events committed by other processes by polling",
                len(os.fsencode(self.path)),
                MAX_SOCKET_PATH,
                self.path,
            )
            return None
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                log.warning(
                    "%s exists and is not a socket; leaving it alone: the relay finds events committed by "
                    "other processes by polling until it is removed",
                    self.path,
                )
                return None
            if _answers(self.path):
                log.warning("another relay listens on %s; this one takes the wake socket over", self.path)
            self.path.unlink(missing_ok=True)  # left by a relay that is gone (or handed over)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.fsencode(self.path))
        except OSError as exc:
            sock.close()
            log.warning("cannot bind the relay's wake socket %s (%s); polling instead", self.path, exc)
            return None
        self._inode = self.path.lstat().st_ino
        return sock

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(16)
            except OSError:
                return
            if not data:  # `stop` shut the socket down
                return
            self._on_wake()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv with b""
        if self._thread is not None:
            self._thread.join(timeout=5)
        sock.close()
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self._inode:  # not the socket of a relay that took over
                self.path.unlink()


def _answers(path: Path) -> bool:
    """True when a live socket is bound at `path` (a stale file refuses the connection)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
        try:
            probe.connect(os.fsencode(path))
        except OSError:
            return False
    return True


class PostgresListener:
    """`LISTEN orderbus_outbox` on a connection of its own; `on_wake` per notification, and once
    after every (re)connect, since a notification sent while it was away is not kept for it."""

    def __init__(self, engine: Engine, on_wake: Callable[[], None]) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_wake = on_wake
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-listen", daemon=True)
        self.connections = 0  # successful LISTENs, for tests and logs

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg  # an optional dependency: only PostgreSQL deployments need it

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    self._on_wake()  # whatever was committed while nobody listened
                    while not self._stopping.is_set():
                        for _notify in conn.notifies(timeout=0.5):
                            self._on_wake()
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("relay LISTEN connection lost (%s); retrying in %g s", exc, RECONNECT_SECONDS)
                self._stopping.wait(RECONNECT_SECONDS)


def wake_listener(engine: Engine, data_dir: Path, on_wake: Callable[[], None]) -> WakeListener:
    """The listener for this database: LISTEN on PostgreSQL, the data directory's socket on SQLite."""
    if engine.dialect.name == "postgresql":
        return PostgresListener(engine, on_wake)
    return SocketListener(data_dir / SOCKET_NAME, on_wake)
