"""amqtt plugin: JWT authentication at CONNECT and the topic ACL on every subscribe, publish and delivery.

The decisions themselves are made by `broker.policy`; this adapter only finds the caller's grants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.admission import Refused, admit
from broker.limits import Limits
from broker.policy import Grants, Policy
from broker.stats import ACL_DENIALS, AUTH_FAILURES, DROPPED
from core.rate_limit import TokenBucket
from core.tokens import TokenService
from core.topics import DEVICE_ROLES

log = logging.getLogger("orderbus.broker")
GRANTS = "orderbus.grants"
CLAIMS = "orderbus.claims"
BUCKET = "orderbus.publish_bucket"
STATUS_BUCKET = "orderbus.status_bucket"  # its presence: a budget of its own


def grants_of(session: Session | None) -> Grants:
    if session is None:
        return Grants()
    return session.attributes.get(GRANTS, Grants())


def role_of(session: Session | None) -> str:
    return str(session.attributes.get(CLAIMS, {}).get("role", "none")) if session else "none"


class JwtAclPlugin(BaseAuthPlugin, BaseTopicPlugin):
    @dataclass
    class Config:
        tokens: Any = None
        policy: Any = None
        limits: Any = None
        refuses: Any = None  # claims -> bool: a revoked device token
        audience: str = "mqtt"

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        if not isinstance(self.config.tokens, TokenService) or not isinstance(self.config.policy, Policy):
            raise ValueError("JwtAclPlugin needs a TokenService and a Policy")
        self.tokens: TokenService = self.config.tokens
        self.policy: Policy = self.config.policy
        self.limits: Limits = self.config.limits or Limits()
        self.refuses: Callable[[dict[str, Any]], bool] = self.config.refuses or (lambda _claims: False)

    async def authenticate(self, *, session: Session) -> bool:
        reason = self._refusal(session)
        if reason is None:
            return True
        AUTH_FAILURES.labels(reason=reason).inc()
        level = logging.INFO if reason == "probe" else logging.WARNING  # every agent's start: not a warning
        log.log(level, "connect refused client_id=%r reason=%s", session.client_id, reason)
        return False

    def _refusal(self, session: Session) -> str | None:
        """Why this CONNECT is refused, or None when it is accepted (`broker.admission`, shared with NATS)."""
        try:
            admission = admit(
                self.tokens,
                self.policy,
                self.refuses,
                client_id=session.client_id or "",
                password=session.password,
                audience=self.config.audience,
            )
        except Refused as exc:
            return exc.reason
        claims, grants = admission.claims, admission.grants
        if session.will_flag and not grants.may_publish(session.will_topic or "", retain=bool(session.will_retain)):
            return "will_not_allowed"
        session.attributes[CLAIMS] = claims
        session.attributes[GRANTS] = grants
        return None

    def _within_rate(self, session: Session, topic: str) -> bool:
        """A token bucket per device connection: `device_publish_burst` at once, then the steady rate.
        Its presence (`.../status`) has a bucket of its own: a device that spent its budget on readings
        could otherwise not say `offline` before it leaves, and would read `online` for good."""
        if role_of(session) not in DEVICE_ROLES:
            return True
        key = STATUS_BUCKET if topic.endswith("/status") else BUCKET
        bucket = session.attributes.get(key)
        if bucket is None:
            bucket = TokenBucket(self.limits.device_publishes_per_second, self.limits.device_publish_burst)
            session.attributes[key] = bucket
        return bucket.try_take()

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        return self.allows(session, topic, action)

    def allows(self, session: Session | None, topic: str | None, action: Action | None) -> bool:
        """The ACL decision, synchronous so the broker can ask it once per delivery without a task."""
        grants = grants_of(session)
        topic = topic or ""
        if action == Action.SUBSCRIBE:
            allowed = grants.may_subscribe(topic)
        elif action == Action.PUBLISH:
            if session is not None and not self._within_rate(session, topic):
                DROPPED.labels(cause="rate_limit").inc()
                log.info("rate limit client_id=%r topic=%.200r", session.client_id, topic)
                return False
            allowed = grants.may_publish(topic)
        elif action == Action.RECEIVE:
            allowed = grants.may_receive(topic)
        else:
            allowed = False
        if not allowed:
            ACL_DENIALS.labels(action=str(action), role=role_of(session)).inc()
            log.info("acl denied client_id=%r action=%s topic=%.200r", session and session.client_id, action, topic)
        return allowed
