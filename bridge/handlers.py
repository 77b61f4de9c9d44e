"""Which handler applies which device message: (topic leaf, device kind) → Handler (bridge/ingest.py)."""

from __future__ import annotations

from bridge.ingest import Handler
from bridge.presence import record_status
from config.settings import Settings


def device_handlers(settings: Settings) -> dict[tuple[str, str], Handler]:
    return {
        ("status", "*"): record_status,
    }
