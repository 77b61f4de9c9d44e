"""The embedded broker: amqtt with our JWT/ACL plugin, MQTT over TCP and over WebSocket."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from api.tokens import TokenService
from broker.plugins import grants_of, role_of
from broker.policy import Policy
from broker.stats import ACL_DENIALS

log = logging.getLogger("orderbus.broker")


@dataclass(frozen=True)
class Listeners:
    host: str
    mqtt_port: int
    ws_port: int


class OrderbusBroker(Broker):
    """amqtt's broker, refusing retained publishes the policy does not allow.

    amqtt's topic plugins never see the retain flag, so the check has to sit here.
    """

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
