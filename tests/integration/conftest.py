"""Fixtures shared by the integration tests: a kitchen and a tablet on it (a module may define its own)."""

from __future__ import annotations

import pytest

from tests.integration.kitchen import Kitchen, Tablet, open_kitchen
from tests.support import Stack, Subscriber


@pytest.fixture
def kitchen(stack: Stack) -> Kitchen:
    return open_kitchen(stack, "Bistro")


@pytest.fixture
def tablet(stack: Stack, subscribers: list[Subscriber], kitchen: Kitchen) -> Tablet:
    return Tablet(stack, subscribers, kitchen.rid, "kds-1")
