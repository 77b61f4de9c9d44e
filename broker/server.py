"""The embedded broker: amqtt with our JWT/ACL plugin and the protections amqtt lacks.

amqtt 0.12.1 is used as a library; `OrderbusBroker` overrides the few places where its
behaviour is unsafe for a restaurant's network (see docs/security.md for the list).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter, WebSocketsWriter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, SERVER_UNAVAILABLE
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from websockets.frames import CloseCode

from broker import codec
from broker.connection import Connection
from broker.delivery import NO_JOURNAL, Journal, Outbound, Snapshot
from broker.guard import Connection as Tracked
from broker.guard import ConnectionGuard, GuardedReader, Refuses, abort
from broker.limits import Limits
from broker.listeners import Listeners, broker_config, refuse, websocket_server
from broker.metrics import CONNECTED_AT, DISCONNECT_REASON, PEER
from broker.plugins import CLAIMS, JwtAclPlugin, grants_of, role_of
from broker.policy import Policy
from broker.routing import Router
from broker.session_state import lighten
from broker.stats import ACL_DENIALS, DISCONNECTS, DROPPED, INTERNAL_ERRORS, REFUSED_CONNECTIONS, Traffic
from broker.subscription_table import SubscriptionTable
from broker.transport import Flusher, Link, Source, StreamSource, WebSocketSource
from core.tokens import TokenService

log = logging.getLogger("orderbus.broker")
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


class OrderbusBroker(Broker):
    """amqtt's listeners, CONNECT parsing, sessions and plugin events, with our own engine after CONNACK
    (`broker.connection`, `broker.delivery`, `broker.routing`) and the checks amqtt lacks:

    - a CONNECT is authenticated before it may touch an existing session (no takeover or
      Last-Will rewrite with a bad token), and a client beyond the limit gets CONNACK 3;
    - CONNECT timeout, keepalive, packet size, token expiry and revocation (`broker.guard`);
    - at most `max_client_backlog_bytes` wait for a consumer that stopped reading; the rest are dropped;
    - retained publishes only where the policy allows them (plugins never see the flag);
    - retained messages only for the session's own subscriptions and only where it may read;
    - MQTT 3.1.1 sessions: in-flight messages resent at reconnect, a clean session discarded at its end.
    """

    def __init__(
        self,
        config: dict[str, Any],
        limits: Limits,
        guard: ConnectionGuard,
        journal: Journal = NO_JOURNAL,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.traffic = Traffic()  # counted by the connections (and metrics_plugin for CONNECT), read by broker.metrics
        super().__init__(config)
        self.limits = limits
        self.guard = guard
        self.journal = journal
        self._snapshot = snapshot
        self._subscriptions = SubscriptionTable()
        self._active = 0
        self._stopping = False
        acl = self.plugins_manager.get_plugin("JwtAclPlugin")
        if not isinstance(acl, JwtAclPlugin):
            raise RuntimeError("the broker needs broker.plugins.JwtAclPlugin in its config")
        self._acl = acl
        self.router = Router(self._subscriptions, self._retained_messages, acl, journal, limits)
        self.flusher = Flusher()
        self._events: set[asyncio.Future[None]] = set()  # disconnect events being fired
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.router.outbox.clear()
        self.loop = asyncio.get_running_loop()  # where broker.clients runs an operator's kick
        await super().start()
        self.guard.start()

    async def _start_listeners(self) -> None:
        """What a journal kept is back before the first client can connect."""
        if self._snapshot is not None:
            self.restore(self._snapshot)
            self._snapshot = None
        await super()._start_listeners()

    async def shutdown(self) -> None:
        """Stop accepting connections first: amqtt closes its listeners last, so a client could
        reconnect to a broker that is shutting down and have its publishes acknowledged into the void."""
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        await self.guard.stop()
        self._stopping = True  # sessions end now, but what the journal holds stays for the next start
        await super().shutdown()

    async def _broadcast_loop(self) -> None:
        """Messages are routed as they are read (`Router.route`); amqtt's queue and loop stay idle."""
        await self._broadcast_shutdown_waiter

    async def _broadcast_message(
        self, session: Session | None, topic: str | None, data: Any, force_qos: int | None = None
    ) -> None:
        if topic:
            self.router.route(topic, bytes(data or b""), force_qos or 0)

    async def retain_message(
        self, source_session: Session | None, topic_name: str | None, data: Any, qos: int | None = None
    ) -> None:
        if topic_name is not None:
            self.router.retain(topic_name, bytes(data or b""), qos or 0)

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """Our one ACL plugin answers synchronously: no task per plugin per call."""
        return self._acl.allows(session, topic, action)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """For plugins (amqtt's BrokerContext): the same rules as a client's SUBSCRIBE."""
        return self.router.subscribe(session, self.router.outbound_for(session), *subscription)

    # --- connections -------------------------------------------------------------------------

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        link = Link(writer.transport, self.flusher, self.traffic)
        await self._guarded(listener_name, StreamSource(reader), StreamWriterAdapter(writer), link)

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        link = Link(websocket.transport, self.flusher, self.traffic, websocket)
        await self._guarded(listener_name, WebSocketSource(websocket), WebSocketsWriter(websocket), link)
        sent = websocket.protocol.close_sent  # websockets itself closes on a message over max_size: count it
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            DROPPED.labels(cause="size").inc()
            log.warning(
                "disconnect websocket from %s reason=packet_too_large (%s)", websocket.remote_address, sent.reason
            )

    async def _guarded(self, listener_name: str, source: Source, writer: WriterAdapter, link: Link) -> None:
        tracked = self.guard.track(source, writer)
        server = self._servers.get(listener_name)
        try:
            if server is None:
                raise AMQTTError(f"unknown listener {listener_name!r}")
            await server.acquire_connection()
            try:
                await self._serve(tracked, source, writer, link)
            finally:
                server.release_connection()
        except Exception:
            INTERNAL_ERRORS.labels(where="connection").inc()
            log.exception("connection on %s failed", listener_name)
        finally:
            self.guard.forget(tracked)
            link.close()
            with contextlib.suppress(RuntimeError):  # the loop may already be closing
                abort(writer)

    async def _create_server_instance(
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int, ssl_context: Any
    ) -> Any:
        if listener_type != ListenerType.WS:
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        handler = partial(self.ws_connected, listener_name=listener_name)
        return await websocket_server(handler, address, port, ssl_context, self.limits)

    async def _serve(self, tracked: Tracked, source: Source, writer: WriterAdapter, link: Link) -> None:
        peer = writer.get_peer_info()
        if peer is None:
            return
        try:
            session, present = await self._accept(tracked.reader, writer, *peer)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            log.debug("no session for %s: %s", peer, exc)
            return
        client_id = session.client_id or ""
        outbound = self.router.outbound_for(session)
        connection = Connection(self.router, self.traffic, session, outbound, source, link, writer, tracked.reader)
        self._sessions[client_id] = (session, connection)
        session.attributes[PEER] = f"{peer[0]}:{peer[1]}"  # for the client list (broker.clients)
        session.attributes[CONNECTED_AT] = time.time()
        if session.transitions.is_connected():  # left so by a connection that ended after its entry went
            session.transitions.disconnect()
        session.transitions.connect()
        self._active += 1
        try:
            link.write(codec.connack(present, 0))
            if outbound.persistent:
                claims = session.attributes.get(CLAIMS) or {}
                self.journal.session_saved(client_id, claims, self.limits.session_expiry_seconds)
            self._resume(session, outbound, link, present)
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=session
            )
            await connection.run(self.limits.max_packet_bytes)
        finally:
            self._active -= 1
            self._end(connection)

    async def _accept(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[Session, bool]:
        """amqtt reads and checks the CONNECT; we authenticate, then decide which session it gets."""
        try:
            _handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            REFUSED_CONNECTIONS.labels(reason="bad_connect").inc()
            log.warning("connect refused from %s:%s reason=bad_connect (%s)", remote_address, remote_port, exc)
            raise AMQTTError(exc) from exc
        lighten(session)
        if not await self._authenticate(session, None):
            await refuse(writer, NOT_AUTHORIZED)
            raise AMQTTError("not authorized")
        session.password = None  # the token: its claims are kept, the secret itself need not be
        client_id = session.client_id or ""
        existing = self._sessions.get(client_id)
        if existing is None and self._active >= self.limits.max_connections:
            REFUSED_CONNECTIONS.labels(reason="max_connections").inc()
            log.warning("connect refused client_id=%r reason=max_connections", session.client_id)
            await refuse(writer, SERVER_UNAVAILABLE)
            raise AMQTTError("too many connections")
        if existing is not None and isinstance(existing[1], Connection):
            log.info("client_id=%r connected again; closing its previous connection", session.client_id)
            self._end(existing[1])  # its Last Will; a clean session ends here [MQTT-3.1.4-2]
            abort(existing[1].writer)
            existing = self._sessions.get(client_id)
        present = False
        if session.clean_session:
            self._drop_session(client_id)  # [MQTT-3.1.2-6]
        elif existing is not None:
            previous, _ = existing
            for name in _RECONNECT_FIELDS:
                setattr(previous, name, getattr(session, name))
            previous.attributes.update(session.attributes)  # this token's claims and grants
            session, present = previous, True
        if isinstance(reader, GuardedReader):
            self.guard.connected(reader.connection, session, session.keep_alive)
        claims = session.attributes[CLAIMS]
        log.info(
            "connect client_id=%s role=%s rid=%s from=%s",
            session.client_id,
            claims["role"],
            claims.get("rid"),
            remote_address,
        )
        return session, present

    def _resume(self, session: Session, outbound: Outbound, link: Link, present: bool) -> None:
        """A returning persistent session: what it may no longer read goes, the rest is resent or sent
        [MQTT-4.4.0-1]. No retained copies: a reconnect establishes no new subscription [MQTT-3.3.1-6]."""
        if present:
            grants = grants_of(session)
            for topic in outbound.keep_only(grants.may_receive):
                ACL_DENIALS.labels(action="receive", role=role_of(session)).inc()
                log.info("acl denied client_id=%r action=receive topic=%.200r queued", session.client_id, topic)
        outbound.resume(link)

    def _end(self, connection: Connection) -> None:
        """A connection is over (DISCONNECT, EOF, violation, guard, takeover): its Last Will unless it
        said DISCONNECT, and a clean session is discarded now, so a reconnect 1 ms later starts afresh
        [MQTT-3.1.2-6]. Synchronous: nothing can come in between."""
        if connection.finished:
            return
        connection.finished = True
        connection.stop()
        connection.link.close()
        session, client_id = connection.session, connection.session.client_id or ""
        if connection.clean_exit:
            session.attributes[DISCONNECT_REASON] = "client"
        elif session.will_flag and session.will_topic and not self._stopping:
            will = bytes(session.will_message or b"")
            self.router.route(session.will_topic, will, session.will_qos or 0)
            if session.will_retain:
                self.router.retain(session.will_topic, will, session.will_qos or 0)
        entry = self._sessions.get(client_id)
        if entry is None or entry[1] is not connection:
            return  # removed meanwhile (shutdown, expiry)
        if connection.outbound.link is connection.link:
            connection.outbound.link = None
        session.transitions.disconnect()
        if session.clean_session:
            self._sessions.pop(client_id, None)
            self.router.forget(client_id)
        else:
            self._sessions[client_id] = (session, None)
            self.journal.disconnected(client_id)  # its expiry counts from now, across a restart too
        event = self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_DISCONNECTED, client_id=client_id, client_session=session
        )
        task = asyncio.ensure_future(event)
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    def kick(self, client_id: str) -> bool:
        """An operator closes a client's connection (its Last Will, as for any drop); False when it is
        not connected. Call on the broker's loop (broker.clients does)."""
        entry = self._sessions.get(client_id)
        if entry is None or not isinstance(entry[1], Connection):
            return False
        DISCONNECTS.labels(reason="admin").inc()
        log.warning("disconnect client_id=%r reason=admin", client_id)
        self._end(entry[1])
        abort(entry[1].writer)
        return True

    def _drop_session(self, client_id: str) -> None:
        """Forget a session and all it is owed (a clean CONNECT replaces it, or it expired)."""
        entry = self._sessions.pop(client_id, None)
        if entry is not None and isinstance(entry[1], Connection):
            entry[1].stop()
            abort(entry[1].writer)
        outbound = self.router.forget(client_id)
        if outbound is not None and outbound.persistent and not self._stopping:
            self.journal.session_deleted(client_id)

    async def _delete_session(self, client_id: str) -> None:
        self._drop_session(client_id)

    async def _cleanup_session(self, client_id: str) -> None:
        """amqtt's shutdown and session-expiry monitor end sessions here."""
        self._drop_session(client_id)

    def restore(self, snapshot: Snapshot) -> None:
        """Persistent sessions and retained messages as a journal kept them (before listeners open)."""
        self.router.restore(snapshot, self._sessions, self._acl.policy)


async def start_broker(
    listeners: Listeners,
    tokens: TokenService,
    policy: Policy,
    limits: Limits | None = None,
    refuses: Refuses | None = None,
    journal: Journal = NO_JOURNAL,
    snapshot: Snapshot | None = None,
) -> OrderbusBroker:
    """Start the broker; `refuses(claims)` says whether a token was revoked (checked at CONNECT and while
    connected); `journal` keeps persistent sessions and retained messages, `snapshot` is what it kept."""
    limits = limits or Limits()
    config = broker_config(listeners, tokens, policy, limits, refuses)
    broker = OrderbusBroker(config, limits, ConnectionGuard(limits, refuses), journal, snapshot)
    await broker.start()
    return broker
