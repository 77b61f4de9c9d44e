from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Stack, Subscriber


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    running = Stack(tmp_path / "data").start()
    yield running
    running.stop()


@pytest.fixture
def subscribers(stack: Stack) -> Iterator[list[Subscriber]]:
    """Subscribers made by a test, closed after it."""
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.close()
