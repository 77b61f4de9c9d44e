"""The embedded broker: amqtt with our JWT/ACL plugin, MQTT over TCP and over WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from api.tokens import TokenService
from broker import topics
from broker.plugins import grants_of, role_of
from broker.policy import Policy
from broker.stats import ACL_DENIALS

log = logging.getLogger("orderbus.broker")
HANDLER_STOP_SECONDS = 2.0


@dataclass(frozen=True)
class Listeners:
    host: str
    mqtt_port: int
    ws_port: int


class _SnapshotSubscriptions(dict):
    """amqtt iterates its subscription table across awaits (delivery, connect); a SUBSCRIBE or
    UNSUBSCRIBE meanwhile raised "dictionary changed size" and killed that broadcast, or shifted a
    list and skipped a subscriber. Iterating over snapshots makes delivery immune to both."""

    def __iter__(self):  # type: ignore[override]
        return iter(list(super().__iter__()))

    def items(self):  # type: ignore[override]
        return [(key, list(value)) for key, value in super().items()]


class OrderbusBroker(Broker):
    """amqtt's broker with the checks its plugin hooks cannot make.

    - retained publishes are refused unless the policy allows them (plugins never see the flag);
    - retained messages are sent only for the session's own subscriptions and only where the
      session may read the topic (amqtt sends them unchecked, and on connect for every filter
      of every client).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotSubscriptions()

    async def shutdown(self) -> None:
        """Stop accepting connections first: amqtt closes its listeners last, so a client could
        reconnect to a broker that is shutting down and have its publishes acknowledged into the void."""
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        await super().shutdown()

    async def _stop_handler(self, handler: BrokerProtocolHandler) -> None:
        """amqtt cancels the reader and waits for it; on Python 3.11 `asyncio.wait_for` can swallow
        that cancellation and the wait never ends (seen: broker shutdown hung). Bound the wait,
        then close the socket under the reader so it ends on EOF."""
        try:
            await asyncio.wait_for(super()._stop_handler(handler), HANDLER_STOP_SECONDS)
        except TimeoutError:
            client_id = handler.session.client_id if handler.session else None
            log.warning("handler of %r did not stop in %ss; closing its connection", client_id, HANDLER_STOP_SECONDS)
            if handler.writer is not None:
                with contextlib.suppress(Exception):
                    await handler.writer.close()

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
                continue
            sends.append(handler.mqtt_publish(topic, retained.data, min(qos, retained.qos or qos), retain=True))
        if sends:
            await asyncio.gather(*sends, return_exceptions=True)

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


def broker_config(listeners: Listeners, tokens: TokenService, policy: Policy) -> dict[str, Any]:
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{listeners.host}:{listeners.mqtt_port}"},
            "ws": {"type": "ws", "bind": f"{listeners.host}:{listeners.ws_port}"},
        },
        "plugins": {"broker.plugins.JwtAclPlugin": {"tokens": tokens, "policy": policy}},
    }


async def start_broker(listeners: Listeners, tokens: TokenService, policy: Policy) -> OrderbusBroker:
    broker = OrderbusBroker(broker_config(listeners, tokens, policy))
    await broker.start()
    return broker
