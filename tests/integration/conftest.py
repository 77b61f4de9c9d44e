"""Fixtures shared by the integration tests: a kitchen and a tablet on it (a module may define its own), and
a chain of two restaurants with a logged-in super_admin and admins."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.accounts import make_chain
from tests.integration.kitchen import Kitchen, Tablet, open_kitchen
from tests.support import App, Stack, Subscriber


@pytest.fixture
def kitchen(stack: Stack) -> Kitchen:
    return open_kitchen(stack, "Bistro")


@pytest.fixture
def tablet(stack: Stack, subscribers: list[Subscriber], kitchen: Kitchen) -> Tablet:
    return Tablet(stack, subscribers, kitchen.rid, "kds-1")


@pytest.fixture
def chain(app: App) -> dict[str, Any]:
    return make_chain(app)
