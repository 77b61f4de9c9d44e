"""On NATS: what the cluster holds retained, read from its `$MQTT_rmsgs` JetStream stream (step 1 of `bridge.retained`).

Why not SUBSCRIBE + UNSUBSCRIBE as on the embedded broker: nats-server 2.15's MQTT gateway keeps an
in-memory index of the retained messages on each node, filled by an ephemeral push consumer on
`$MQTT_rmsgs` that the node creates on its first MQTT connection after a start (server/mqtt.go,
`createAccountSessionManager`), and it answers CONNECT and SUBSCRIBE without waiting for that consumer to
catch up. A node restarted after kill -9 therefore can hand the relay an empty or partial picture: a stale
retained order survived the rebuild ("0 cleared"). Waiting for the node instead (jsz, healthz) does not
help: no endpoint says when that consumer has delivered everything. The stream is the source of truth
every node's index is built from, replicated and read from its leader, so it is read directly.

Layout (server/mqtt.go, checked against a running 2.15.1 cluster): one message per retained topic
(`MaxMsgsPer: 1`) on subject `$MQTT.rmsgs.<NATS subject of the topic>`; headers `Nmqtt-RFlags` (the
PUBLISH flags in hex, prefixed `-` on a clear), `Nmqtt-RTopic`, `Nmqtt-ROrigin`, `Nmqtt-RSource`; the body
is the payload. A clear is stored as an empty body until its origin node deletes it. Messages moved from
before 2.10 carry no headers and a JSON body (`msg` base64). Anything else is unreadable to the nodes
too (they skip it, no subscriber ever gets it): it is counted and logged, and skipped here as well.

The relay's MQTT login cannot do this: the auth callout mints MQTT-only users without `$` subjects
(broker/nats/callout.py), so the reader logs in as the deployment's own read-only user of the bus account
(`retained_reader` in the callout's `authorization_block`: `STREAM.MSG.GET` on this stream and its inboxes,
nothing else). It walks the stream with `next_by_subj`, one request per message: a rebuild runs once per
relay connect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = logging.getLogger("orderbus.relay")

STREAM = "$MQTT_rmsgs"
SUBJECT_PREFIX = "$MQTT.rmsgs."
NO_MESSAGE = 10037  # JetStream's "no message found": the walk is over
FLAGS_HEADER = "Nmqtt-RFlags"
REQUEST_SECONDS = 5.0

UNREADABLE = Counter(
    "orderbus_relay_retained_unreadable",
    "retained messages in NATS's $MQTT_rmsgs stream the rebuild could not decode (skipped, as the nodes skip them)",
)


class StreamUnreadable(Exception):
    """The stream could not be read (no connection, login or permission refused, a JetStream error)."""


def stream_subject(topic_filter: str) -> str:
    """The stream subject of one of the bus's state filters (`restaurant/+/orders/open/+`): its levels are
    plain words and `+` (bridge.retained's filters), which map one to one (`/`→`.`, `+`→`*`, `#`→`>`)."""
    levels = topic_filter.split("/")
    if any(not level or "." in level for level in levels):
        raise ValueError(f"{topic_filter!r}: an empty level or a '.' has no one-to-one NATS subject")
    return SUBJECT_PREFIX + ".".join({"+": "*", "#": ">"}.get(level, level) for level in levels)


def topic_of(subject: str) -> str:
    """The MQTT topic of a stream subject, as the server turns it back (`natsSubjectToMQTTTopic`):
    `.` → `/`, `//` → `.`, a `/` token → an empty level."""
    nats = subject.removeprefix(SUBJECT_PREFIX)
    out, i = [], 0
    while i < len(nats):
        char = nats[i]
        if char == "/":  # `/.` is a level separator after an empty level, `//` a dot; a lone `/` writes nothing
            if nats[i + 1 : i + 2] in (".", "/"):
                out.append("/" if nats[i + 1] == "." else ".")
                i += 1
        else:
            out.append("/" if char == "." else char)
        i += 1
    return "".join(out)


def payload_of(headers: bytes, data: bytes) -> bytes | None:
    """The retained payload of one stream message (b"" for a clear); None when it cannot be decoded."""
    fields: dict[str, str] = {}
    lines = headers.decode("utf-8", "replace").split("\r\n")
    if headers and not lines[0].startswith("NATS/1.0"):
        return None
    for line in lines[1:]:
        key, sep, text = line.partition(":")
        if sep:
            fields[key.strip()] = text.strip()
    flags = fields.get(FLAGS_HEADER)
    if flags is not None:
        try:
            bits = int(flags.removeprefix("-"), 16)
        except ValueError:
            return None
        if bits >= 0x10 or (bits >> 1) & 0x3 > 2:  # the server's own check: 4 flag bits, QoS 0-2
            return None
        return b"" if flags.startswith("-") else data
    try:  # moved from before 2.10: the whole message JSON-encoded, its body base64
        legacy = json.loads(data)
        return base64.b64decode(legacy["msg"] or "", validate=True) if isinstance(legacy, dict) else None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


@dataclass(frozen=True)
class StreamReader:
    """Reads the retained messages under the bus's filters from `$MQTT_rmsgs`, as `user`."""

    servers: Sequence[str]
    user: str
    password: str
    timeout: float = REQUEST_SECONDS

    def held(self, topic_filters: Sequence[str]) -> dict[str, bytes]:
        """Topic → payload of every retained message under `topic_filters` (clears and unreadable ones left
        out). Blocking (the relay's thread); StreamUnreadable when the stream cannot be read."""
        return asyncio.run(self._held([stream_subject(f) for f in topic_filters]))

    async def _held(self, subjects: list[str]) -> dict[str, bytes]:
        import nats  # the `nats` extra: only a deployment on NATS gets here
        from nats.errors import Error as NatsError

        nc: NatsClient | None = None
        failures = []
        for server in self.servers:  # in turn, each tried twice 0.1 s apart (nats-py: 60 times, 2 s apart)
            try:
                nc = await nats.connect(
                    servers=[server],
                    user=self.user,
                    password=self.password,
                    connect_timeout=self.timeout,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    name="orderbus-relay-retained",
                )
                break
            except (NatsError, OSError, TimeoutError) as exc:
                failures.append(f"{server}: {exc!r}")
        if nc is None:
            raise StreamUnreadable(f"cannot log in to NATS as {self.user!r}: {'; '.join(failures)}")
        held: dict[str, bytes] = {}
        unreadable = 0
        try:
            for subject in subjects:
                seq = 1
                while (message := await self._next(nc, subject, seq)) is not None:
                    seq = int(message["seq"]) + 1
                    payload = self._decode(message)
                    if payload is None:
                        unreadable += 1
                        log.warning("retained message %s #%s is unreadable: skipped", message["subject"], seq - 1)
                    elif payload:
                        held[topic_of(str(message["subject"]))] = payload
        except (NatsError, OSError, TimeoutError, KeyError, TypeError, ValueError) as exc:
            raise StreamUnreadable(f"reading {STREAM}: {exc!r}") from exc
        finally:
            await nc.close()
        UNREADABLE.inc(unreadable)
        return held

    async def _next(self, nc: NatsClient, subject: str, seq: int) -> dict[str, Any] | None:
        """The first message at or after `seq` on `subject` (JSON, as JetStream answers it), None after the last."""
        request = json.dumps({"seq": seq, "next_by_subj": subject}).encode()
        reply = await nc.request(f"$JS.API.STREAM.MSG.GET.{STREAM}", request, timeout=self.timeout)
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error is not None:
            if error.get("err_code") == NO_MESSAGE:
                return None
            raise StreamUnreadable(f"{STREAM}: {error.get('description')} ({error.get('err_code')})")
        message: dict[str, Any] = answer["message"]
        return message

    @staticmethod
    def _decode(message: dict[str, Any]) -> bytes | None:
        try:
            headers = base64.b64decode(str(message.get("hdrs") or ""), validate=True)
            data = base64.b64decode(str(message.get("data") or ""), validate=True)
        except (binascii.Error, ValueError):
            return None
        return payload_of(headers, data)
