"""The device rules of the bus: which handler applies which device message, and what runs on a timer."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.ingest import Handler
from bridge.presence import record_status
from bridge.sweeper import Sweep
from config.settings import Settings


@dataclass
class DeviceRules:
    handlers: dict[tuple[str, str], Handler]  # (topic leaf, device kind or "*") → handler
    sweeps: list[Sweep] = field(default_factory=list)


def device_rules(settings: Settings) -> DeviceRules:
    return DeviceRules(
        handlers={
            ("status", "*"): record_status,
        },
        sweeps=[],
    )
