"""Presence: a device's retained `online` / `offline` / `lost` status → the device row.

`boot_id` orders a device's runs (see `domain.presence_applies`); a device that sends none still
has presence, only without that ordering.
"""

from __future__ import annotations

from typing import Any

from bridge.ingest import DeviceMessage, Rejected
from core import topics
from core.models import Device
from core.services import devices, tickets
from core.unit_of_work import UnitOfWork


def record_status(uow: UnitOfWork, device: Device, message: DeviceMessage) -> dict[str, Any] | None:
    state, boot_id = message.body.get("state"), message.body.get("boot_id")
    if state not in topics.PRESENCE_STATES:
        raise Rejected("bad_state", f"state must be one of {sorted(topics.PRESENCE_STATES)}")
    if boot_id is not None and (not isinstance(boot_id, str) or not 0 < len(boot_id) <= 64):
        raise Rejected("bad_type", "boot_id must be a non-empty string of at most 64 characters")
    applied = devices.record_presence(uow, device, state, boot_id)
    if applied and state == topics.ONLINE and device.kind == topics.PRINTER and device.station:
        tickets.resend_unprinted(uow, device.restaurant_id, device.station)
    return None
