"""paho's network loop without `select()`'s ceiling of 1,024 descriptors.

paho-mqtt (2.2) waits on its socket with `select.select`, which cannot watch a descriptor numbered
1,024 or above: it raises ValueError, paho reads that as "connection lost" and reconnects for ever,
each time on a new socket that is numbered just as high. `orderbus up` runs the relay's and the
ingest's paho clients in the process that holds the embedded broker's connections (up to
`max_connections`, 10,000), so past about a thousand devices the bus's own clients could never
reconnect again: orders taken, no ticket printed. The test suite met the same wall when it leaked
descriptors (tests/support.py, `end_loop`).

`use_poll()` gives paho's module a stand-in for `select` whose `select()` is answered by poll(2),
which has no such ceiling and returns the same three lists. It is process-wide and idempotent, and
called by the factory of the bus's clients (`bridge.mqtt.service_client`): device agents hold a
handful of descriptors and keep paho as it is.
"""

from __future__ import annotations

import math
import select
from typing import Any

import paho.mqtt.client as paho_client

_READ = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL
_WRITE = select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL


class PollSelect:
    """What paho's module sees as `select`: `select()` by poll(2); anything else is the real module's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(select, name)

    @staticmethod
    def select(rlist: list[Any], wlist: list[Any], xlist: list[Any], timeout: float | None = None) -> tuple:
        """`select.select` for sockets of any number. A closed socket (fileno -1) is a ValueError, as paho
        expects from select; a hang-up or error counts as readable (the read then finds the end)."""
        wanted: dict[int, int] = {}
        for sockets, flag in ((rlist, select.POLLIN | select.POLLPRI), (wlist, select.POLLOUT)):
            for sock in sockets:
                fd = sock.fileno()
                if fd < 0:
                    raise ValueError("file descriptor cannot be a negative integer")
                wanted[fd] = wanted.get(fd, 0) | flag
        poller = select.poll()
        for fd, flags in wanted.items():
            poller.register(fd, flags)
        wait = None if timeout is None else max(0, math.ceil(timeout * 1000))
        ready = dict(poller.poll(wait))
        readable = [sock for sock in rlist if ready.get(sock.fileno(), 0) & _READ]
        writable = [sock for sock in wlist if ready.get(sock.fileno(), 0) & _WRITE]
        return readable, writable, []


def use_poll() -> None:
    """Make every paho client in this process wait with poll(2) instead of select(2)."""
    if not isinstance(paho_client.select, PollSelect):
        paho_client.select = PollSelect()  # type: ignore[assignment]
