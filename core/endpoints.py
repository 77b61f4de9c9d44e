"""Several MQTT endpoints for one client, and moving on to the next when one fails.

A NATS cluster (docs/ops.md, "Running on NATS") has an MQTT listener on every node; a client that knows
only one of them is down whenever that node is. The one syntax, for the bridge's `--mqtt-host` and the
device agents' `--host`: `host[:port][,host[:port]…]`, a port left out being the `--mqtt-port` /
`--port` given beside it. IPv6 addresses go in brackets (`[::1]:1883`).

paho connects to one host at a time. `Failover.attach` rotates it: when a connection attempt fails
(`on_connect_fail`) or an accepted connection is lost (`on_disconnect` with a failure reason), it calls
`connect_async` with the next endpoint from inside the callback. That is paho 2.x's supported way to
change the host: `connect_async` puts the client back to "connect asynchronously" and the network loop's
own reconnect (after its back-off) then dials the new host; the `host`/`port` setters refuse while a
connection is being made or lost. A clean `disconnect()` (reason "normal disconnection") does not rotate.
A persistent session (clean_session=False) keeps its unacknowledged messages across the move: paho resends them.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

log = logging.getLogger("orderbus.endpoints")

Endpoint = tuple[str, int]
SYNTAX = "host[:port][,host[:port]…]"


class EndpointError(ValueError):
    """An endpoint list that cannot be used; the message is one line naming the flag."""


def parse_endpoints(text: str, default_port: int, flag: str = "--mqtt-host") -> list[Endpoint]:
    """`host[:port][,host[:port]…]` → [(host, port), …] in the given order, duplicates dropped."""
    hint = f"use {SYNTAX}"
    endpoints: list[Endpoint] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise EndpointError(f"{flag} {text!r} has an empty entry; {hint}")
        host, port = _split(item, default_port, flag, hint)
        if (host, port) not in endpoints:
            endpoints.append((host, port))
    return endpoints


def _split(item: str, default_port: int, flag: str, hint: str) -> Endpoint:
    if "://" in item:
        raise EndpointError(f"{flag} {item!r}: no scheme here, only host[:port]; {hint}")
    if item.startswith("["):  # [v6]:port or [v6]
        host, _, rest = item[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise EndpointError(f"{flag} {item!r} is not host[:port]; {hint}")
        port_text = rest[1:] if rest else ""
    elif item.count(":") > 1:
        raise EndpointError(f"{flag} {item!r}: put an IPv6 address in brackets, [addr]:port; {hint}")
    else:
        host, _, port_text = item.partition(":")
        if ":" in item and not port_text:
            raise EndpointError(f"{flag} {item!r} has an empty port; {hint}")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise EndpointError(f"{flag} {item!r} has no usable host; {hint}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EndpointError(f"{flag} {item!r}: the port must be a number from 1 to 65535; {hint}")
    return host, int(port_text)


def describe(endpoints: list[Endpoint]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in endpoints)


class Failover:
    """The endpoints of one paho client, tried in turn: `first` to connect, then the next on every failure."""

    def __init__(self, endpoints: list[Endpoint], name: str) -> None:
        if not endpoints:
            raise EndpointError(f"{name}: no MQTT endpoint")
        self.endpoints = endpoints
        self.name = name
        self._cycle = itertools.cycle(endpoints)
        self.current = next(self._cycle)
        self.moves = 0  # how often the client moved on (for tests and logs)

    def attach(self, client: Any, keepalive: int) -> None:
        """Chain rotation onto the client's `on_connect_fail` and `on_disconnect` (set those first);
        does nothing with one endpoint, where paho's own reconnect is all there is to do."""
        if len(self.endpoints) < 2:
            return
        on_fail, on_disconnect = client.on_connect_fail, client.on_disconnect

        def failed(c: Any, userdata: Any) -> None:
            if on_fail is not None:
                on_fail(c, userdata)
            self._move(c, keepalive, "connection failed")

        def disconnected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if on_disconnect is not None:
                on_disconnect(c, userdata, flags, reason, props)
            if getattr(reason, "is_failure", False):  # not our own clean disconnect()
                self._move(c, keepalive, f"connection lost ({reason})")

        client.on_connect_fail = failed
        client.on_disconnect = disconnected

    def advance(self) -> Endpoint:
        """Move on to the next endpoint (round robin) and return it."""
        self.current = next(self._cycle)
        return self.current

    def _move(self, client: Any, keepalive: int, why: str) -> None:
        left = self.current
        self.advance()
        self.moves += 1
        log.warning("%s: %s at %s:%s; next %s:%s", self.name, why, *left, *self.current)
        client.connect_async(*self.current, keepalive=keepalive)
