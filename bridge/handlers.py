"""The device rules of the bus: which handler applies which device message, and what runs on a timer."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.ingest import Handler
from bridge.presence import record_status
from bridge.printer_events import PrinterEvents, expire_tickets
from bridge.scales import ScaleReadings
from bridge.sweeper import Sweep
from bridge.tablet_events import apply_tablet_event
from config.settings import Settings


@dataclass
class DeviceRules:
    handlers: dict[tuple[str, str], Handler]  # (topic leaf, device kind or "*") → handler
    sweeps: list[Sweep] = field(default_factory=list)


def device_rules(settings: Settings) -> DeviceRules:
    scales = ScaleReadings(settings)  # one object: its handler and its sweep share what it remembers
    return DeviceRules(
        handlers={
            ("status", "*"): record_status,
            ("events", "printer"): PrinterEvents(),
            ("events", "tablet"): apply_tablet_event,
            ("readings", "scale"): scales,
        },
        sweeps=[expire_tickets(settings.ticket_ack_seconds), scales.sweep],
    )
