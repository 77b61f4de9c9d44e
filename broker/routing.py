"""Who gets a message: subscriptions, the per-session receive check, the retained store.

Everything here is synchronous and runs on the broker's loop: a PUBLISH is routed to every
subscriber in the same turn it is read, with no queue or task in between. The tables keep amqtt's
shapes (`_subscriptions`: filter -> [(session, qos)], `_retained_messages`: topic -> message with
`.topic/.data/.qos`), so amqtt's own code and plugins that read them keep working.
"""

from __future__ import annotations

import logging
import time
from math import floor
from typing import Any

from amqtt.contexts import Action
from amqtt.session import Session

from broker import topics
from broker.delivery import Journal, Message, Outbound, Snapshot
from broker.limits import Limits
from broker.plugins import CLAIMS, GRANTS, JwtAclPlugin, grants_of, role_of
from broker.policy import Policy
from broker.session_state import lighten
from broker.stats import ACL_DENIALS
from broker.subscription_table import SubscriptionTable

log = logging.getLogger("orderbus.broker")
ACL_CACHE_TOPICS = 512  # per session; cleared when full (a session reads few distinct topics)


class Router:
    def __init__(
        self,
        subscriptions: SubscriptionTable,
        retained: dict[str, Any],
        acl: JwtAclPlugin,
        journal: Journal,
        limits: Limits,
    ) -> None:
        self.subscriptions = subscriptions
        self.retained = retained
        self.acl = acl
        self.journal = journal
        self.limits = limits
        self.outbox: dict[str, Outbound] = {}  # by client id: what each session is owed

    def outbound_for(self, session: Session) -> Outbound:
        """The session's `Outbound`, made on first use (persistent unless CleanSession=1)."""
        client_id = session.client_id or ""
        outbound = self.outbox.get(client_id)
        if outbound is None:
            limits = self.limits
            outbound = self.outbox[client_id] = Outbound(
                client_id,
                not session.clean_session,
                window=limits.max_inflight_messages,
                max_queue=limits.max_offline_queue,
                max_backlog=limits.max_client_backlog_bytes,
                journal=self.journal,
            )
        return outbound

    def restore(self, snapshot: Snapshot, sessions: dict[str, Any], policy: Policy) -> None:
        """Offline persistent sessions (into amqtt's `sessions` table) and retained messages from a journal."""
        now = time.time()
        for saved in snapshot.sessions:
            session = Session()
            lighten(session)
            session.client_id, session.clean_session = saved.client_id, False
            session.attributes[CLAIMS] = saved.claims
            session.attributes[GRANTS] = policy.grants(saved.claims)
            session.transitions.disconnect()
            session.last_disconnect_time = floor(saved.disconnected_at or now)
            sessions[saved.client_id] = (session, None)
            outbound = self.outbound_for(session)
            outbound.load(saved.pending)
            outbound.filters = dict(saved.subscriptions)
            for topic_filter, qos in saved.subscriptions:
                self.subscriptions.setdefault(topic_filter, []).append((session, qos))
        for topic, payload, qos in snapshot.retained:
            self.retained[topic] = Message(topic, payload, qos)

    # --- delivery ------------------------------------------------------------------------------

    def route(self, topic: str, data: bytes, qos: int) -> bool:
        """Deliver to every matching subscription (once per subscription, as amqtt did); True when a
        persistent session's share was journaled."""
        message = Message(topic, data, qos)
        journaled = False
        outbox = self.outbox
        for _filter, subscribers in self.subscriptions.matching_now(topic):
            for session, granted in subscribers:
                outbound = outbox.get(session.client_id)
                if outbound is not None and self.may_receive(session, outbound, topic):
                    journaled = outbound.deliver(message, granted) or journaled
        return journaled

    def may_receive(self, session: Session, outbound: Outbound, topic: str) -> bool:
        """The ACL's receive decision, remembered per (session, topic) until the session's grants change
        (a reconnect with another token brings a new grants object). Every refusal is counted."""
        grants = session.attributes.get(GRANTS)
        allowed = outbound.allowed
        if allowed is None or grants is not outbound.grants:
            allowed = outbound.allowed = {}
            outbound.grants = grants
        decision = allowed.get(topic)
        if decision is None:
            if len(allowed) >= ACL_CACHE_TOPICS:
                allowed.clear()
            decision = allowed[topic] = self.acl.allows(session, topic, Action.RECEIVE)  # logs a refusal
        elif not decision:
            ACL_DENIALS.labels(action="receive", role=role_of(session)).inc()
        return decision

    def send_retained(self, session: Session, outbound: Outbound, topic_filter: str, qos: int, action: str) -> None:
        """Retained messages for one of the session's own subscriptions, RETAIN=1, at min(retained QoS,
        `qos`) [MQTT-3.3.1-6, MQTT-3.3.1-8], only where the session may read."""
        if outbound.filters is None or topic_filter not in outbound.filters:
            return  # not (or no longer) its subscription
        grants = grants_of(session)
        for topic, retained in list(self.retained.items()):
            if not topics.matches(topic_filter, topic):
                continue
            if not grants.may_receive(topic):
                ACL_DENIALS.labels(action=action, role=role_of(session)).inc()
                log.info("acl denied client_id=%r action=%s topic=%.200r", session.client_id, action, topic)
                continue
            message = retained if isinstance(retained, Message) else as_message(retained)
            outbound.deliver(message, qos, retain=True)

    def publish(self, session: Session, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """A client's PUBLISH: the retained policy, the ACL (and device rate limit), then routing.
        True when a persistent session's share was journaled (the acknowledgement waits for it)."""
        if retain and not grants_of(session).may_publish(topic, retain=True):
            ACL_DENIALS.labels(action="retain", role=role_of(session)).inc()
            log.info("acl denied retained publish client_id=%r topic=%r", session.client_id, topic)
            return False
        if not self.acl.allows(session, topic, Action.PUBLISH):
            return False
        journaled = self.route(topic, payload, qos)
        if retain and self.retain(topic, payload, qos) and qos:
            journaled = True  # the retained store is journaled too: its acknowledgement waits for the commit
        return journaled

    # --- the retained store --------------------------------------------------------------------

    def retain(self, topic: str, data: bytes, qos: int) -> bool:
        """Store (or, for an empty payload, clear [MQTT-3.3.1-10]) the retained message of `topic`;
        True when the journal was told (the acknowledgement of the PUBLISH may wait for it)."""
        durable = not topic.startswith("$")  # $SYS is published again every few seconds
        if data:
            self.retained[topic] = Message(topic, bytes(data), qos)
            if durable:
                self.journal.retained(topic, bytes(data), qos)
                return True
        elif self.retained.pop(topic, None) is not None and durable:
            self.journal.retained_cleared(topic)
            return True
        return False

    # --- subscriptions -------------------------------------------------------------------------

    def subscribe(self, session: Session, outbound: Outbound, topic_filter: str, qos: int) -> int:
        """The granted QoS, or 0x80. A filter already held is replaced, with its new QoS [MQTT-3.8.4-3]."""
        if qos not in (0, 1, 2) or not topics.is_valid_filter(topic_filter):
            ACL_DENIALS.labels(action="subscribe", role=role_of(session)).inc()
            log.info(
                "subscribe refused client_id=%r filter=%.200r qos=%s reason=malformed",
                session.client_id,
                topic_filter,
                qos,
            )
            return 0x80
        if not self.acl.allows(session, topic_filter, Action.SUBSCRIBE):
            return 0x80
        subscribers = self.subscriptions.setdefault(topic_filter, [])
        for index, (held, _) in enumerate(subscribers):
            if held.client_id == session.client_id:
                subscribers[index] = (session, qos)
                break
        else:
            subscribers.append((session, qos))
        if outbound.filters is None:
            outbound.filters = {}
        outbound.filters[topic_filter] = qos
        if outbound.persistent:
            self.journal.subscribed(outbound.client_id, topic_filter, qos)
        return qos

    def unsubscribe(self, session: Session, outbound: Outbound, topic_filter: str) -> None:
        if outbound.filters is not None:
            outbound.filters.pop(topic_filter, None)
        if self._remove(topic_filter, session.client_id) and outbound.persistent:
            self.journal.unsubscribed(outbound.client_id, topic_filter)

    def _remove(self, topic_filter: str, client_id: str | None) -> bool:
        subscribers = self.subscriptions.get(topic_filter)
        if subscribers is None:
            return False
        kept = [(s, q) for s, q in subscribers if s.client_id != client_id]
        if len(kept) == len(subscribers):
            return False
        if kept:
            subscribers[:] = kept
        else:
            del self.subscriptions[topic_filter]
        return True

    def forget(self, client_id: str) -> Outbound | None:
        """Drop a session's subscriptions and everything it is owed (no journal: the caller decides)."""
        outbound = self.outbox.pop(client_id, None)
        if outbound is not None and outbound.filters:
            for topic_filter in outbound.filters:
                self._remove(topic_filter, client_id)
        return outbound


def as_message(retained: Any) -> Message:
    """A retained entry put there by other code (amqtt's RetainedApplicationMessage) as a `Message`."""
    return Message(retained.topic, bytes(retained.data), retained.qos or 0)
