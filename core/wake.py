"""The wake channel, sending side: tell a relay in another process that events were committed.

A relay in the same process is woken directly (a `threading.Event`). One in another process
(`orderbus api` beside `orderbus bridge`) would otherwise find the events only at its idle poll,
seconds later. On PostgreSQL the unit of work sends `NOTIFY orderbus_outbox` in the committing
transaction (delivered at commit, see `core.unit_of_work`); on SQLite, which has no such thing,
the committing process sends one byte to the relay's UNIX datagram socket in the data directory
(`bridge.wake` binds it). A wake is a hint, never the only way: the relay still polls, so a wake
that finds nobody listening, or a full queue, is dropped without an error or a wait.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger("orderbus.wake")

CHANNEL = "orderbus_outbox"  # PostgreSQL LISTEN/NOTIFY channel
SOCKET_NAME = "relay.sock"  # in the data directory
# sockaddr_un.sun_path holds 108 bytes on Linux (104 on the BSDs), the final NUL included.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
# Nobody listens (no file, or a file nobody has bound), or the listener's queue is full (a wake
# is already pending there): all mean "nothing to do".
_QUIET = {errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOTSOCK}


def socket_path_fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH


class SocketWake:
    """Sends one byte to the relay's socket at `path`; callable after each commit that wrote events.

    Non-blocking and silent when nobody listens; a path too long for a UNIX socket turns it off
    with one warning (the relay then finds the events by polling)."""

    def __init__(self, path: Path) -> None:
        self._path = os.fsencode(path)
        self._sock: socket.socket | None = None
        self._warned = False
        if not socket_path_fits(path):
            log.warning(
                "data directory path too long for the relay's wake socket (%d > %d bytes): %s; "
                "a separate relay finds new events by polling",
                len(self._path),
                MAX_SOCKET_PATH,
                path,
            )
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    def __call__(self) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(b"\x01", self._path)
        except OSError as exc:
            if exc.errno not in _QUIET and not self._warned:
                self._warned = True
                log.warning("cannot wake the relay through %s: %s", os.fsdecode(self._path), exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
