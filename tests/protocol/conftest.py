"""The protocol tests run against a broker alone, the one the security tests start (their fixtures)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.protocol.client import close_all
from tests.security.conftest import broker, make_broker

__all__ = ["broker", "make_broker"]


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()
