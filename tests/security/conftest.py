"""A broker alone (no API) with limits a test can shrink, running in a background loop."""

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
from tests.support import free_port


@dataclass
class BrokerUnderTest:
    limits: Limits
    revoked: set[str] = field(default_factory=set)
    tls: tuple[Path, Path] | None = None  # (certfile, keyfile): adds MQTT over TLS and secure WebSocket

    def __post_init__(self) -> None:
        self.tokens = TokenService(b"security-test-key-0123456789abcdef")
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

    def refuses(self, claims: dict[str, Any]) -> bool:
        return claims["sub"] in self.revoked

    def start(self) -> BrokerUnderTest:
        self._thread.start()
        self.broker = self.call(start_broker(self.listeners, self.tokens, self.policy, self.limits, self.refuses))
        return self

    def stop(self) -> None:
        if self.broker is not None:
            self.call(self.broker.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def token(self, sub: str, role: str, rid: int | None = 7, ttl: int = 600, **extra: Any) -> str:
        return self.tokens.issue(sub=sub, role=role, rid=rid, audience="mqtt", ttl_seconds=ttl, extra=extra)


@pytest.fixture
def make_broker() -> Iterator[Callable[..., BrokerUnderTest]]:
    started: list[BrokerUnderTest] = []

    def make(tls: tuple[Path, Path] | None = None, **limits: Any) -> BrokerUnderTest:
        broker = BrokerUnderTest(Limits(**limits), tls=tls).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(make_broker) -> BrokerUnderTest:
    return make_broker()
