from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import select

from api.deps import StaffScope, UowDep
from api.models import Device
from api.schemas import DeviceOut

router = APIRouter(prefix="/restaurants/{rid}/devices", tags=["devices"])


@router.get("")
def list_devices(rid: StaffScope, uow: UowDep) -> list[DeviceOut]:
    """Devices with their last known presence and when the bus last heard from them."""
    rows = uow.session.exec(select(Device).where(Device.restaurant_id == rid).order_by(Device.id))
    return [DeviceOut.model_validate(row, from_attributes=True) for row in rows]
