"""A small replacement for the `transitions` state machine amqtt builds for every session.

amqtt uses three states (new, connected, disconnected) and two triggers; a full `transitions.Machine`
per session costs about 15 KiB, a third of an idle connection's memory. This object keeps the
same interface amqtt calls (`connect`, `disconnect`, `is_connected`, `state`) and the same rules.
"""

from __future__ import annotations

import time
from math import floor

from amqtt.session import Session
from transitions import MachineError

_CONNECT_FROM = frozenset({"new", "disconnected"})


class SessionState:
    __slots__ = ("_session", "state")

    def __init__(self, session: Session, state: str = "new") -> None:
        self._session = session
        self.state = state

    def connect(self) -> None:
        if self.state not in _CONNECT_FROM:
            raise MachineError(f"cannot connect a session that is {self.state}")
        self.state = "connected"
        self._session.last_connect_time = floor(time.time())
        self._session.last_disconnect_time = None

    def disconnect(self) -> None:
        self.state = "disconnected"
        self._session.last_disconnect_time = floor(time.time())

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


def lighten(session: Session) -> None:
    """Give a session the small state object in place of its `transitions.Machine`, and drop the queues
    and in-flight tables amqtt's handler used: the broker's engine keeps its own (`broker.delivery`),
    and four asyncio queues and dicts per session cost about 6 KiB of an idle connection."""
    if not isinstance(session.transitions, SessionState):
        session.transitions = SessionState(session, session.transitions.state)
    for name in ("retained_messages", "delivered_message_queue", "inflight_in", "inflight_out"):
        session.__dict__.pop(name, None)
