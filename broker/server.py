"""The embedded broker: amqtt with our JWT/ACL plugin and the protections amqtt lacks.

amqtt 0.12.1 is used as a library; `OrderbusBroker` overrides the few places where its
behaviour is unsafe for a restaurant's network (see docs/security.md for the list).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import websockets
from amqtt.adapters import (
    ReaderAdapter,
    StreamReaderAdapter,
    StreamWriterAdapter,
    WebSocketsReader,
    WebSocketsWriter,
    WriterAdapter,
)
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, SERVER_UNAVAILABLE, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from broker import topics
from broker.guard import ConnectionGuard, GuardedReader, Refuses, abort, stalled
from broker.limits import Limits
from broker.plugins import CLAIMS, JwtAclPlugin, grants_of, role_of
from broker.policy import Policy
from broker.session_state import lighten
from broker.stats import ACL_DENIALS, DROPPED, REFUSED_CONNECTIONS, REQUEUED, Traffic
from broker.subscription_table import SubscriptionTable
from core.tokens import TokenService

log = logging.getLogger("orderbus.broker")
HANDLER_STOP_SECONDS = 2.0
WEBSOCKET_PATH = "/mqtt"
# what a reconnecting persistent session takes from its new CONNECT (amqtt's own list, plus the retain flag)
_RECONNECT_FIELDS = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "will_retain",
    "keep_alive",
    "username",
    "password",
)


@dataclass(frozen=True)
class Listeners:
    host: str
    mqtt_port: int
    ws_port: int
    tls_port: int | None = None
    wss_port: int | None = None
    certfile: Path | None = None
    keyfile: Path | None = None


class OrderbusBroker(Broker):
    """amqtt's broker with the checks its plugin hooks cannot make:

    - a CONNECT is authenticated before it may touch an existing session (no takeover or
      Last-Will rewrite with a bad token), and a client beyond the limit gets CONNACK 3;
    - CONNECT timeout, keepalive, packet size, token expiry and revocation (`broker.guard`);
    - at most `max_client_backlog_bytes` wait for a consumer that stopped reading; the rest are dropped;
    - retained publishes only where the policy allows them (plugins never see the flag);
    - retained messages only for the session's own subscriptions and only where it may read.
    """

    def __init__(self, config: dict[str, Any], limits: Limits, guard: ConnectionGuard) -> None:
        self.traffic = Traffic()  # counted by broker.metrics_plugin, read by broker.metrics
        super().__init__(config)
        self.limits = limits
        self.guard = guard
        self._subscriptions = SubscriptionTable()
        self._active = 0
        acl = self.plugins_manager.get_plugin("JwtAclPlugin")
        if not isinstance(acl, JwtAclPlugin):
            raise RuntimeError("the broker needs broker.plugins.JwtAclPlugin in its config")
        self._acl = acl

    async def start(self) -> None:
        await super().start()
        self.guard.start()

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        """amqtt's delivery of one message, finding its subscribers through the table's index
        instead of testing every filter (and formatting a debug line for each that missed)."""
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for _filter, subscriptions in self._subscriptions.matching(topic):
            for target_session, sub_qos in subscriptions:
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(target_session, topic=topic, action=Action.RECEIVE):
                    continue
                connected = target_session.transitions.state == "connected"
                if not connected and not target_session.clean_session and qos in (QOS_1, QOS_2):
                    await self._retain_broadcast_message(broadcast, qos, target_session)  # kept for its return
                    continue
                handler = self._get_handler(target_session) if connected else None
                if handler is not None:
                    publish = handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                    running_tasks.append(asyncio.ensure_future(publish))

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """amqtt asks every topic plugin through a task per plugin per call, once per delivery; our
        one ACL plugin answers synchronously, so ask it directly."""
        return self._acl.allows(session, topic, action)

    async def shutdown(self) -> None:
        """Stop accepting connections first: amqtt closes its listeners last, so a client could
        reconnect to a broker that is shutting down and have its publishes acknowledged into the void."""
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        await self.guard.stop()
        await super().shutdown()

    # --- connections -------------------------------------------------------------------------

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        await self._guarded(listener_name, StreamReaderAdapter(reader), StreamWriterAdapter(writer))

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        await self._guarded(listener_name, WebSocketsReader(websocket), WebSocketsWriter(websocket))
        sent = websocket.protocol.close_sent  # websockets itself closes on a message over max_size: count it
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            DROPPED.labels(cause="size").inc()
            log.warning(
                "disconnect websocket from %s reason=packet_too_large (%s)", websocket.remote_address, sent.reason
            )

    async def _guarded(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        connection = self.guard.track(reader, writer)
        try:
            await self._client_connected(listener_name, connection.reader, writer)
        except Exception:
            log.exception("connection on %s failed", listener_name)
        finally:
            self.guard.forget(connection)
            with contextlib.suppress(RuntimeError):  # the loop may already be closing
                abort(writer)

    async def _create_server_instance(
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int, ssl_context: Any
    ) -> Any:
        if listener_type != ListenerType.WS:
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        return await websockets.serve(
            partial(self.ws_connected, listener_name=listener_name),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            max_size=self.limits.max_packet_bytes + 16,
            compression=None,  # per-message deflate cost ~23% of send work for small JSON events (fan-out bench)
            # No WebSocket pings: MQTT keepalive (enforced at 1.5x) already finds dead clients, and
            # paho-mqtt answers a ping with an unmasked pong, which websockets rightly treats as a
            # protocol error: every paho WebSocket client was dropped 20 s after connecting.
            ping_interval=None,
            process_request=_only_mqtt_path,
        )

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            REFUSED_CONNECTIONS.labels(reason="bad_connect").inc()
            log.warning("connect refused from %s:%s reason=bad_connect (%s)", remote_address, remote_port, exc)
            raise AMQTTError(exc) from exc
        lighten(session)
        if not await self._authenticate(session, None):
            await _refuse(writer, NOT_AUTHORIZED)
            raise AMQTTError("not authorized")
        existing = self._sessions.get(session.client_id or "")
        if existing is None and self._active >= self.limits.max_connections:
            REFUSED_CONNECTIONS.labels(reason="max_connections").inc()
            log.warning("connect refused client_id=%r reason=max_connections", session.client_id)
            await _refuse(writer, SERVER_UNAVAILABLE)
            raise AMQTTError("too many connections")
        if existing is not None and existing[0].transitions.is_connected():
            log.info("client_id=%r connected again; closing its previous connection", session.client_id)
            if existing[1].writer is not None:
                abort(existing[1].writer)
        if session.clean_session:
            await self._delete_session(session.client_id or "")
            session.parent = 0
        elif existing is not None:
            previous, _ = existing
            for name in _RECONNECT_FIELDS:
                setattr(previous, name, getattr(session, name))
            previous.attributes.update(session.attributes)  # this token's claims and grants
            session, session.parent = previous, 1
        else:
            session.parent = 0
        if isinstance(reader, GuardedReader):
            self.guard.connected(reader.connection, session, session.keep_alive)
        # The guard enforces keepalive. amqtt's own timer wraps every read in `asyncio.wait_for` (a task
        # and a timer per packet, and the 3.11 cancellation bug `_stop_handler` works around) and then
        # does nothing when it fires; with 0 it is never armed.
        session.keep_alive = 0
        claims = session.attributes[CLAIMS]
        log.info(
            "connect client_id=%s role=%s rid=%s from=%s",
            session.client_id,
            claims["role"],
            claims.get("rid"),
            remote_address,
        )
        return handler, session

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        _guard_deliveries(handler, self.limits.max_client_backlog_bytes)
        self._active += 1
        try:
            await super()._handle_client_session(reader, writer, session, handler, server, listener_name)
        finally:
            self._active -= 1

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """amqtt's per-client loop, in an order that loses nothing: a message the client sent before
        it left was accepted (TCP-acknowledged, or PUBACKed), so it is routed before the disconnect
        is handled. amqtt handled the disconnect first and discarded what was still queued."""
        disconnected = asyncio.ensure_future(handler.wait_disconnect())
        subscription = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscription = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        delivery = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [disconnected, subscription, unsubscription, delivery], return_when=asyncio.FIRST_COMPLETED
                )
                if subscription in done:
                    await self._handle_subscription(client_session, handler, subscription)
                    subscription = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscription in done:
                    await self._handle_unsubscription(client_session, handler, unsubscription)
                    unsubscription = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if delivery in done:
                    if not await self._handle_message_delivery(client_session, handler, delivery):
                        break
                    delivery = asyncio.ensure_future(handler.mqtt_deliver_next_message())
                if disconnected in done:
                    await self._deliver_queued(client_session, handler)
                    await self._handle_disconnect(client_session, handler, disconnected)
                    break
        except asyncio.CancelledError:
            log.debug("message loop of %r cancelled", client_session.client_id)
        finally:
            waiters = [disconnected, subscription, unsubscription, delivery]
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _deliver_queued(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        queue = client_session.delivered_message_queue
        accepted = []
        while not queue.empty():  # taken without yielding, so no waiting reader can take one first
            accepted.append(queue.get_nowait())
        for message in accepted:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(message)
            if not await self._handle_message_delivery(client_session, handler, done):
                return

    async def _stop_handler(self, handler: BrokerProtocolHandler) -> None:
        """amqtt cancels the reader and waits for it; on Python 3.11 `asyncio.wait_for` can swallow
        that cancellation and the wait never ends (seen: broker shutdown hung). Bound the wait,
        then abort the socket under the reader so it ends."""
        try:
            await asyncio.wait_for(super()._stop_handler(handler), HANDLER_STOP_SECONDS)
        except TimeoutError:
            client_id = handler.session.client_id if handler.session else None
            log.warning("handler of %r did not stop in %ss; aborting its connection", client_id, HANDLER_STOP_SECONDS)
            if handler.writer is not None:
                abort(handler.writer)

    # --- messages ----------------------------------------------------------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """amqtt grants any requested QoS (a SUBSCRIBE asking QoS 3 got SUBACK 3, and every delivery
        to it then failed) and refuses a malformed filter before our plugin sees it, uncounted."""
        topic_filter, qos = subscription
        if qos not in (0, 1, 2) or not topics.is_valid_filter(topic_filter):
            ACL_DENIALS.labels(action="subscribe", role=role_of(session)).inc()
            log.info(
                "subscribe refused client_id=%r filter=%.200r qos=%s reason=malformed",
                session.client_id,
                topic_filter,
                qos,
            )
            return 0x80
        return await super().add_subscription(subscription, session)

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: Any
    ) -> bool:
        message = wait_deliver.result()
        packet = getattr(message, "publish_packet", None)
        retained = message is not None and packet is not None and packet.retain_flag
        if retained and not grants_of(client_session).may_publish(message.topic or "", retain=True):
            ACL_DENIALS.labels(action="retain", role=role_of(client_session)).inc()
            log.info("acl denied retained publish client_id=%r topic=%r", client_session.client_id, message.topic)
            return True
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int, target_session: Session) -> None:
        """amqtt queues for a disconnected persistent session without limit; a device that never
        comes back (or a client opening many persistent sessions) would grow the broker without end."""
        if target_session.retained_messages.qsize() >= self.limits.max_offline_queue:
            DROPPED.labels(cause="offline_queue_full").inc()
            log.warning("offline queue full client_id=%r topic=%.200r", target_session.client_id, broadcast["topic"])
            return
        await super()._retain_broadcast_message(broadcast, qos, target_session)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """What was queued for a persistent session while it was offline passed the grants it had then;
        it may come back with a narrower token (a printer moved to another station). Check again."""
        grants, queued = grants_of(session), session.retained_messages
        kept = []
        while not queued.empty():  # taken without yielding
            message = queued.get_nowait()
            if grants.may_receive(message.topic or ""):
                kept.append(message)
            else:
                ACL_DENIALS.labels(action="receive", role=role_of(session)).inc()
                log.info("acl denied client_id=%r action=receive topic=%.200r queued", session.client_id, message.topic)
        for message in kept:
            queued.put_nowait(message)
        await super()._publish_session_retained_messages(session)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        subscribed = any(s.client_id == session.client_id for s, _ in self._subscriptions.get(topic_filter, []))
        if handler is None or not subscribed:
            return
        grants = grants_of(session)
        sends = []
        for topic, retained in list(self._retained_messages.items()):
            if not topics.matches(topic_filter, topic):
                continue
            if not grants.may_receive(topic):
                ACL_DENIALS.labels(action="receive_retained", role=role_of(session)).inc()
                log.info("acl denied client_id=%r action=receive_retained topic=%.200r", session.client_id, topic)
                continue
            sends.append(handler.mqtt_publish(topic, retained.data, min(qos, retained.qos or qos), retain=True))
        if sends:
            await asyncio.gather(*sends, return_exceptions=True)


def _guard_deliveries(handler: BrokerProtocolHandler, limit_bytes: int) -> None:
    """Two fixes around amqtt's per-delivery task.

    - Bound: each task holds its message until the client's write lock is free, so a client that
      stops reading piles them up without end. Once its socket is stalled and more than
      `limit_bytes` wait for it, further deliveries to it are dropped and counted. A fast client in
      a burst is never stalled, so it loses nothing however deep the burst.
    - Redeliver: amqtt forgets a QoS 1/2 delivery not acknowledged within 5 s, even for a persistent
      session (a printer on flaky Wi-Fi). Such a message goes back to the session's queue and the
      unresponsive connection is dropped, so the client gets it again when it reconnects.
    """
    publish = handler.mqtt_publish
    waiting = 0

    async def guarded(topic: str, data: bytes, qos: int | None = None, *args: Any, **kwargs: Any) -> Any:
        nonlocal waiting
        size = len(data or b"")
        if waiting + size > limit_bytes and stalled(handler.writer):
            DROPPED.labels(cause="queue_full").inc()
            return None
        waiting += size
        try:
            return await publish(topic, data, qos, *args, **kwargs)
        except TimeoutError:
            session = handler.session
            if session is None or session.clean_session or not qos:
                DROPPED.labels(cause="unacknowledged").inc()
                raise
            REQUEUED.inc()
            log.warning(
                "no PUBACK in time client_id=%r topic=%.200r; requeued, dropping the connection",
                session.client_id,
                topic,
            )
            await session.retained_messages.put(RetainedApplicationMessage(None, topic, data, qos))
            if handler.writer is not None:
                abort(handler.writer)
            return None
        finally:
            waiting -= size

    handler.mqtt_publish = guarded


async def _refuse(writer: WriterAdapter, return_code: int) -> None:
    with contextlib.suppress(Exception):
        await ConnackPacket.build(0, return_code).to_stream(writer)
        await asyncio.wait_for(writer.close(), 2)


def _only_mqtt_path(connection: Any, request: Request) -> Response | None:
    """The WebSocket handshake: only at WEBSOCKET_PATH and with the `mqtt` subprotocol (without this check
    websockets refuses a missing subprotocol itself, with a traceback and no count)."""
    offered = {p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")}
    if request.path.split("?")[0] != WEBSOCKET_PATH:
        reason, status, text = "ws_path", 404, f"MQTT over WebSocket is served at {WEBSOCKET_PATH}\n"
    elif "mqtt" not in offered:
        reason, status, text = "ws_subprotocol", 400, "MQTT over WebSocket needs the `mqtt` subprotocol\n"
    else:
        return None
    REFUSED_CONNECTIONS.labels(reason=reason).inc()
    log.warning("websocket refused from %s reason=%s path=%.200r", connection.remote_address, reason, request.path)
    return connection.respond(status, text)


def broker_config(
    listeners: Listeners, tokens: TokenService, policy: Policy, limits: Limits, refuses: Refuses | None = None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "session_expiry_interval": limits.session_expiry_seconds,
        "listeners": {
            "default": {"type": "tcp", "bind": f"{listeners.host}:{listeners.mqtt_port}"},
            "ws": {"type": "ws", "bind": f"{listeners.host}:{listeners.ws_port}"},
        },
        "plugins": {
            "broker.plugins.JwtAclPlugin": {"tokens": tokens, "policy": policy, "limits": limits, "refuses": refuses},
            "broker.metrics_plugin.MetricsPlugin": {},  # traffic counters, connection events, $SYS (docs/ops.md)
        },
    }
    tls = {"ssl": True, "certfile": str(listeners.certfile), "keyfile": str(listeners.keyfile)}
    if listeners.certfile and listeners.keyfile:
        if listeners.tls_port:
            config["listeners"]["tls"] = {"type": "tcp", "bind": f"{listeners.host}:{listeners.tls_port}", **tls}
        if listeners.wss_port:
            config["listeners"]["wss"] = {"type": "ws", "bind": f"{listeners.host}:{listeners.wss_port}", **tls}
    return config


async def start_broker(
    listeners: Listeners,
    tokens: TokenService,
    policy: Policy,
    limits: Limits | None = None,
    refuses: Refuses | None = None,
) -> OrderbusBroker:
    """Start the broker; `refuses(claims)` says whether a token was revoked (checked at CONNECT and while connected)."""
    limits = limits or Limits()
    config = broker_config(listeners, tokens, policy, limits, refuses)
    broker = OrderbusBroker(config, limits, ConnectionGuard(limits, refuses))
    await broker.start()
    return broker
