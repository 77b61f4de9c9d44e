"""Keep every node's view of the MQTT retained messages alive when a node dies: each server's
`$MQTT_rmsgs` consumer replicated like the stream.

nats-server 2.15 keeps, per server, an index of the retained messages (which topics hold one, and a
cache of recent payloads) fed by one push consumer on the `$MQTT_rmsgs` stream, made when the server
starts. That consumer is an ephemeral with no replica count, so JetStream makes it R1 and places it on
one of the stream's peers at random, often another node. When that node is killed, the consumer is gone
until the node returns: the server whose index it fed learns no retained message any more, and serves a
new subscriber the state of the moment of the kill (an older stock level where a newer one is stored, no
new open order, a closed order still open) [MQTT-3.3.1-6]. Seen here: after kill -9 of the node hosting
two of the three consumers, both survivors served `v1` for a topic set to `v3` since, and nothing for a
topic created after the kill (tests/e2e/test_cluster_faults.py,
`test_a_node_killed_leaves_no_other_node_serving_an_older_retained_state`).

NATS has no setting for that consumer's replica count, but scaling a consumer up is an ordinary
consumer update. So the responder (the bus's process that already holds NATS credentials) sets each such
consumer's replica count to the stream's, as soon as one appears (JetStream's consumer-created advisory)
and on a timer (a missed advisory, a responder started after the nodes). A replicated consumer elects a
new leader on a survivor and goes on delivering in stream order, so every node's index stays current
with two of three nodes up. It does this through its own user in the bus's account, allowed only these
requests (`callout.authorization_block`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from prometheus_client import Counter

log = logging.getLogger("orderbus.callout")

STREAM = "$MQTT_rmsgs"  # the MQTT gateway's retained messages, one per topic (bridge/nats_retained.py reads it)
STREAM_INFO = f"$JS.API.STREAM.INFO.{STREAM}"
CONSUMER_LIST = f"$JS.API.CONSUMER.LIST.{STREAM}"
CONSUMER_CREATE = f"$JS.API.CONSUMER.CREATE.{STREAM}.{{name}}"
CREATED_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{STREAM}.>"
# what the responder's user in the bus's account may do (callout.authorization_block): these only
PUBLISH_ALLOWED = (STREAM_INFO, CONSUMER_LIST, f"$JS.API.CONSUMER.CREATE.{STREAM}.>")
SUBSCRIBE_ALLOWED = ("_INBOX.>", CREATED_ADVISORY)
CHECK_EVERY_SECONDS = 5.0
REQUEST_TIMEOUT = 5.0

SCALED = Counter(
    "orderbus_nats_retained_consumers_scaled",
    "nats-server retained-message consumers the responder asked to replicate like their stream, by result",
    ["result"],
)


class JetStreamError(Exception):
    """A JetStream API request answered with an error."""


async def _api(connection: Any, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = json.loads((await connection.request(subject, json.dumps(body).encode(), timeout=REQUEST_TIMEOUT)).data)
    if reply.get("error"):
        raise JetStreamError(f"{subject}: {reply['error'].get('description', reply['error'])}")
    return dict(reply)


async def replicate_once(connection: Any) -> int:
    """One pass: every `$MQTT_rmsgs` consumer with fewer replicas than the stream gets the stream's count.
    Returns how many were asked; a stream of one replica (a single node) needs nothing."""
    replicas = int((await _api(connection, STREAM_INFO, {}))["config"].get("num_replicas") or 1)
    if replicas < 2:
        return 0
    consumers: list[dict[str, Any]] = []
    while True:  # the API answers in pages
        page = await _api(connection, CONSUMER_LIST, {"offset": len(consumers)})
        consumers += page.get("consumers") or []
        if not page.get("consumers") or len(consumers) >= int(page.get("total", 0)):
            break
    asked = 0
    for consumer in consumers:
        config = dict(consumer.get("config") or {})
        if int(config.get("num_replicas") or 1) >= replicas:
            continue
        config["num_replicas"] = replicas
        name = str(consumer["name"])
        request = {"stream_name": STREAM, "config": config, "action": "update"}
        try:
            await _api(connection, CONSUMER_CREATE.format(name=name), request)
        except (JetStreamError, TimeoutError) as exc:  # gone meanwhile (its server stopped), or no quorum: next pass
            SCALED.labels(result="failed").inc()
            log.warning("could not replicate the retained-message consumer %s: %s", name, exc)
            continue
        SCALED.labels(result="ok").inc()
        log.info("retained-message consumer %s now replicated %d times, like its stream", name, replicas)
        asked += 1
    return asked


class RetainedConsumers:
    """The watch: a pass at start, at every consumer-created advisory and every `every` seconds."""

    def __init__(self, connection: Any, every: float = CHECK_EVERY_SECONDS) -> None:
        self._connection, self._every = connection, every
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connection.subscribe(CREATED_ADVISORY, cb=self._on_created)
        self._due.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its CancelledError, awaited

    async def _on_created(self, _msg: Any) -> None:
        self._due.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self._every)
            self._due.clear()
            try:
                await replicate_once(self._connection)
            except (JetStreamError, TimeoutError) as exc:  # no stream yet (no MQTT client so far), no meta leader
                log.debug("retained-message consumers not checked: %s", exc)
            except Exception:  # a bad reply or a lost connection must not end the watch: logged, tried again
                log.exception("retained-message consumers not checked")
