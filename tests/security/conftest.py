"""A broker alone (no API) with limits a test can shrink, running in a background loop.

The ACL and token attack files (tests/conftest.py `BOTH_ENGINES`) get `broker` twice: `embedded` (ours,
fresh per test) and `nats` (node 0 of the session's three-node cluster, tests/nats.py `NatsBrokerUnderTest`,
with one responder per module, fixture `nats_broker`). Both answer `port`, `ws_port`, `tokens`, `token()`,
`revoked`, and `rid()` / `topic()`, which put the test's restaurant numbers (7, 8, …) on the NATS test's own
block of ids (identity here). A test that reaches into the embedded broker or its limits is marked
`embedded_only`; `make_broker` (limits shrunk) is always the embedded one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker.limits import Limits
from broker.policy import Policy
from broker.server import Listeners, OrderbusBroker, start_broker
from config import DEFAULT_ACL_POLICY
from core.tokens import TokenService
from tests.support import end_loop, free_port

SECURITY_KEY = b"security-test-key-0123456789abcdef"


@dataclass
class BrokerUnderTest:
    engine = "embedded"
    limits: Limits
    revoked: set[str] = field(default_factory=set)
    tls: tuple[Path, Path] | None = None  # (certfile, keyfile): adds MQTT over TLS and secure WebSocket
    journal: Any = None  # broker.delivery.Journal; None: the broker's default (nothing kept)
    snapshot: Any = None  # broker.delivery.Snapshot restored at start

    def __post_init__(self) -> None:
        self.tokens = TokenService(SECURITY_KEY)
        self.policy = Policy.load(DEFAULT_ACL_POLICY)
        certfile, keyfile = self.tls or (None, None)
        tls_port, wss_port = (free_port(), free_port()) if self.tls else (None, None)
        self.listeners = Listeners("127.0.0.1", free_port(), free_port(), tls_port, wss_port, certfile, keyfile)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.broker: OrderbusBroker | None = None

    @property
    def port(self) -> int:
        return self.listeners.mqtt_port

    @property
    def ws_port(self) -> int:
        return self.listeners.ws_port

    def rid(self, n: int | None) -> int | None:
        return n

    def topic(self, text: str) -> str:
        return text

    def refuses(self, claims: dict[str, Any]) -> bool:
        return claims["sub"] in self.revoked

    def start(self) -> BrokerUnderTest:
        self._thread.start()
        extra = {"journal": self.journal} if self.journal is not None else {}
        start = start_broker(
            self.listeners, self.tokens, self.policy, self.limits, self.refuses, snapshot=self.snapshot, **extra
        )
        self.broker = self.call(start)
        return self

    def stop(self) -> None:
        if self.broker is not None:
            self.call(self.broker.shutdown())
        end_loop(self.loop, self._thread)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def token(self, sub: str, role: str, rid: int | None = 7, ttl: int = 600, **extra: Any) -> str:
        return self.tokens.issue(sub=sub, role=role, rid=rid, audience="mqtt", ttl_seconds=ttl, extra=extra)


@pytest.fixture
def make_broker() -> Iterator[Callable[..., BrokerUnderTest]]:
    started: list[BrokerUnderTest] = []

    def make(
        tls: tuple[Path, Path] | None = None, journal: Any = None, snapshot: Any = None, **limits: Any
    ) -> BrokerUnderTest:
        broker = BrokerUnderTest(Limits(**limits), tls=tls, journal=journal, snapshot=snapshot).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(request: pytest.FixtureRequest, make_broker) -> Iterator[Any]:
    if getattr(request, "param", "embedded") == "embedded":
        yield make_broker()
        return
    made = request.getfixturevalue("nats_broker").begin()
    try:
        yield made
    finally:
        made.end()


@pytest.fixture(scope="module")
def nats_broker(nats_bus: Any) -> Iterator[Any]:
    """Node 0 of the session's cluster and one responder of this module's (tests/nats.py)."""
    from tests.nats import NatsBrokerUnderTest

    made = NatsBrokerUnderTest(nats_bus, TokenService(SECURITY_KEY), Policy.load(DEFAULT_ACL_POLICY))
    try:
        yield made.start()
    finally:
        made.stop()
