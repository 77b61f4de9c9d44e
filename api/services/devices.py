"""Device presence, as reported by the devices' retained status messages."""

from __future__ import annotations

from api.domain import NotFound
from api.models import Device, utcnow
from api.unit_of_work import UnitOfWork

PRESENCE_STATES = frozenset({"online", "offline", "lost"})


def record_presence(uow: UnitOfWork, restaurant_id: int, device_id: str, state: str) -> Device:
    device = uow.session.get(Device, device_id)
    if device is None or device.restaurant_id != restaurant_id:
        raise NotFound(f"device {device_id} not found in restaurant {restaurant_id}")
    if state not in PRESENCE_STATES:
        raise ValueError(f"unknown presence state {state!r}")
    device.presence = state
    device.last_seen = utcnow()
    uow.session.add(device)
    uow.commit()
    return device
