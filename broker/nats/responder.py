"""The auth-callout responder on the wire: `Decider` (broker/nats/callout.py) answering nats-server's
requests, and the kicks of revoked devices.

One connection in the callout account answers `$SYS.REQ.USER.AUTH` (a queue group, so several
responders share the load: run one `orderbus responder` per node, each given that node's URL first — nats-server
hands a request to a queue member on its own node before a remote one — or several on one node); one in the
system account closes the connections the denylist now refuses
(`$SYS.REQ.SERVER.<server id>.KICK` with the connection id), learns the connections of every node from
CONNZ, and follows NATS's disconnect events; one in the bus's account keeps every node's retained-message
consumer replicated, so a node's death leaves no other node with a frozen retained state
(`retained_consumers`).

Under a login storm the requests queue up, and the server gives each one `authorization { timeout }` (2 s
by default): a request read after its deadline is dropped unanswered (`Decider.past_deadline`, counted in
`orderbus_callout_dropped`), since the server has already refused that login and an answer would only
delay the live requests behind it. `workers` requests are decided at once, in threads when more than one
(the ed25519 signing and verifying run outside the GIL); one (the default) decides on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from broker.nats import CalloutUnavailable
from broker.nats.callout import (
    CALLOUT_SUBJECT,
    DECISIONS,
    EXPIRED_REQUEST,
    Admitted,
    Credentials,
    Decider,
    Decision,
    bus_user_of,
    claims_of_user,
    system_user_of,
)
from broker.nats.connections import cluster_connections, kick
from broker.nats.retained_consumers import RetainedConsumers

log = logging.getLogger("orderbus.callout")

DISCONNECT_EVENTS = "$SYS.ACCOUNT.{account}.DISCONNECT"
QUEUE_GROUP = "orderbus-callout"

HANDLING = Histogram(
    "orderbus_callout_handling_seconds",
    "time from a callout request reaching the responder's handler to its reply being sent",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
KICKS = Counter(
    "orderbus_callout_kicks", "connections the responder asked NATS to close (revoked device), by result", ["result"]
)


async def _connect(servers: str | list[str], user: str, password: str, name: str) -> Any:
    """A NATS connection that gives up on the first round of failures (a cluster that is not up is one
    clear error, not an endless retry) and, once connected, reconnects for ever."""
    import nats  # the `nats` extra; imported here so the embedded broker never needs it

    connected = False

    async def on_error(exc: Exception) -> None:  # before the first connection, the error raised below says it
        log.log(logging.WARNING if connected else logging.DEBUG, "callout: NATS %s: %s", name, exc or type(exc))

    try:
        connection = await nats.connect(
            servers,
            user=user,
            password=password,
            name=name,
            error_cb=on_error,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
        )
    except Exception as exc:
        where = servers if isinstance(servers, str) else ",".join(servers)
        raise CalloutUnavailable(
            f"cannot connect to NATS at {where} as {user!r} ({exc or type(exc).__name__}); "
            "is the cluster up, and do --broker and the data directory's nats-callout.json match its config?"
        ) from exc
    connection.options["max_reconnect_attempts"] = -1  # nats-py reads it at each reconnect
    connected = True
    return connection


@dataclass
class Responder:
    """The decider on the wire, plus the kicks of revoked devices.

    `admitted` remembers every connection let in, by (server id, cid), until NATS reports it gone
    (`$SYS.ACCOUNT.<account>.DISCONNECT`) or its token expires; `recall` adds every connection of the
    cluster from CONNZ (at start, and at each denylist change: another responder may have admitted it);
    `kick_refused` closes those whose claims the denylist now refuses. A server's id is new at every
    start, so a remembered cid never names another process's connection.
    """

    decider: Decider
    workers: int = 1
    admitted: dict[tuple[str, int], Admitted] = field(default_factory=dict)
    _callout: Any = None
    _pool: ThreadPoolExecutor | None = None
    _slots: asyncio.Semaphore | None = None
    _system: Any = None
    _bus: Any = None
    _retained: RetainedConsumers | None = None
    _sweeping: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, servers: str | list[str], credentials: Credentials) -> None:
        """Connect both users and subscribe; `CalloutUnavailable` (one line) when NATS cannot be reached or
        refuses the login. Once connected, it reconnects for ever."""
        self._callout = await _connect(servers, credentials.auth_user, credentials.auth_password, "orderbus-callout")
        try:
            self._system = await _connect(
                servers, system_user_of(credentials.auth_user), credentials.auth_password, "orderbus-callout-sys"
            )
            self._bus = await _connect(
                servers, bus_user_of(credentials.auth_user), credentials.auth_password, "orderbus-callout-bus"
            )
        except BaseException:
            await self.stop()
            raise
        self._retained = RetainedConsumers(self._bus)
        await self._retained.start()
        await self._callout.subscribe(CALLOUT_SUBJECT, queue=QUEUE_GROUP, cb=self._on_request)
        await self._system.subscribe(DISCONNECT_EVENTS.format(account=self.decider.account), cb=self._on_disconnect)
        await self._callout.flush()
        await self._system.flush()
        try:
            await self.recall()
        except Exception as exc:  # admitting must not wait for it; the next revocation tries the registry
            log.warning("callout: could not recall the cluster's connections: %s", exc)
        log.info("callout responder ready on %s", servers)

    async def stop(self) -> None:
        if self._retained is not None:
            await self._retained.stop()
            self._retained = None
        for connection in (self._callout, self._system, self._bus):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.drain()
        self._callout = self._system = self._bus = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _on_request(self, msg: Any) -> None:
        """The subscription's handler (nats-py awaits it once per message, in order). With one worker it
        answers here; with more it waits for a free slot, then answers in a task, so that up to `workers`
        requests are decided at once. The deadline is looked at after the wait, by `decide`."""
        if self._slots is None:
            await self._answer(msg, time.monotonic())
            return
        began = time.monotonic()
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._answer(msg, began))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Any, began: float) -> None:
        try:
            if self._pool is None:
                decision = self._decide(msg.data)
            else:
                decision = await asyncio.get_running_loop().run_in_executor(self._pool, self._decide, msg.data)
            await self._reply(msg, decision)
        finally:
            if self._slots is not None:
                self._slots.release()
        HANDLING.observe(time.monotonic() - began)

    def _decide(self, data: bytes) -> Decision:
        try:
            return self.decider.decide(data)
        except Exception:  # `decide` catches what it expects; anything else is still a refusal, counted
            log.exception("callout refused: internal error")
            DECISIONS.labels(result="internal_error").inc()
            return Decision("internal_error", b"")

    async def _reply(self, msg: Any, decision: Decision) -> None:
        if decision.result == EXPIRED_REQUEST:  # the server has refused this login already
            return
        if decision.admitted is not None:
            self._prune()
            self.admitted[(decision.admitted.server_id, decision.admitted.cid)] = decision.admitted
        try:
            await msg.respond(decision.response)
        except Exception as exc:  # the server then times out and refuses: still closed
            DECISIONS.labels(result="reply_failed").inc()
            log.warning("callout: could not send the reply (%s); the server will refuse on its timeout", exc)

    async def _on_disconnect(self, msg: Any) -> None:
        try:
            event = json.loads(msg.data)
            self.admitted.pop((event["server"]["id"], int(event["client"]["id"])), None)
        except (ValueError, KeyError, TypeError):
            log.warning("callout: unreadable disconnect event")

    def _prune(self) -> None:
        now = self.decider.now()
        for key in [key for key, entry in self.admitted.items() if float(entry.claims["exp"]) <= now]:
            del self.admitted[key]

    async def kick_refused(self) -> int:
        """Close every admitted connection whose token the denylist now refuses; the number asked."""
        if self._system is None:
            return 0
        doomed = [entry for entry in self.admitted.values() if self.decider.refuses(entry.claims)]
        for entry in doomed:
            try:
                await kick(self._system, entry.server_id, entry.cid)
                result = "ok"
                self.admitted.pop((entry.server_id, entry.cid), None)
            except Exception as exc:  # kept: the next refresh tries again
                result = "failed"
                log.warning("callout: kick of client_id=%r failed: %s", entry.claims.get("sub"), exc)
            KICKS.labels(result=result).inc()
            log.warning("callout kicked client_id=%r reason=revoked result=%s", entry.claims.get("sub"), result)
        return len(doomed)

    async def recall(self, wait_seconds: float = 0.5) -> int:
        """Learn the connections already on the cluster (admitted by an earlier run or another responder)
        from every server's CONNZ, so that a revocation kicks them too; the number learned."""
        if self._system is None:
            return 0
        learned = 0
        for server_id, connection in await cluster_connections(self._system, self.decider.account, wait_seconds):
            claims = claims_of_user(str(connection.get("authorized_user", "")))
            cid = connection.get("cid")
            if claims is not None and isinstance(cid, int):
                self.admitted.setdefault((server_id, cid), Admitted(server_id, cid, claims | {"exp": 2**62}))
                learned += 1
        log.info("callout: recalled %d connections", learned)
        return learned

    @property
    def system(self) -> Any:
        """The connection in the system account (CONNZ, KICK), for `broker.nats.clients`; None when stopped."""
        return self._system

    def on_denylist_change(self) -> None:
        """For `RevocationWatch.on_refresh` (called on the loop): sweep in the background."""
        task = asyncio.get_running_loop().create_task(self.sweep())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sweep(self) -> None:
        """Kick what this responder knows to be refused at once, then recall the cluster's connections
        (another responder may have admitted some) and kick again; one sweep at a time."""
        async with self._sweeping:
            try:
                await self.kick_refused()
                await self.recall()
                await self.kick_refused()
            except Exception:  # counted per kick; a failed recall waits for the next change
                log.exception("callout: revocation sweep failed")
