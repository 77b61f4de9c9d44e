"""Devices: their credentials (create, re-issue, revoke), their presence, and the broker's denylist."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlmodel
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from core import domain, events
from core.commands import DeviceIn
from core.domain import DomainError, NotFound
from core.locking import locked
from core.models import Device, MenuItem, utcnow
from core.paging import Page, Window, page
from core.services import restaurants
from core.tokens import TokenError, TokenService
from core.topics import DEVICE_ROLES, PRESENCE_STATES
from core.unit_of_work import UnitOfWork

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class IssuedDevice:
    """A device and the broker token just issued for it: the token is stored nowhere, so this is its one showing."""

    device: Device
    token: str


def list_devices(uow: UnitOfWork, restaurant_id: int, window: Window) -> Page[Device]:
    query = sqlmodel.select(Device).where(col(Device.restaurant_id) == restaurant_id).order_by(col(Device.id))
    return page(uow, query, window)


def get_device(uow: UnitOfWork, restaurant_id: int, device_id: str, *, lock: bool = False) -> Device:
    """`lock`: for a use case that changes the device from what it reads (see `core.locking`)."""
    device = locked(uow.session, Device, device_id) if lock else uow.session.get(Device, device_id)
    if device is None or device.restaurant_id != restaurant_id:
        raise NotFound(f"device {device_id} not found in restaurant {restaurant_id}")
    return device


def create_device(uow: UnitOfWork, tokens: TokenService, restaurant_id: int, data: DeviceIn) -> IssuedDevice:
    """Register a device and issue its first broker token, which is returned here and nowhere else."""
    restaurants.open_restaurant(uow, restaurant_id)  # only a super_admin can name an unknown one
    if uow.session.get(Device, data.id) is not None:
        # Ids are MQTT client ids, so they are unique across restaurants; say nothing about whose it is.
        raise DomainError(f"device id {data.id} is already taken; choose another")
    if data.item_id is not None:
        item = uow.session.get(MenuItem, data.item_id)
        if item is None or item.restaurant_id != restaurant_id:
            raise NotFound(f"menu item {data.item_id} not found")
    device = Device(
        id=data.id,
        restaurant_id=restaurant_id,
        kind=data.kind,
        name=data.name,
        station=data.station,
        item_id=data.item_id,
        tare_grams=data.tare_grams,
    )
    token = _issue(tokens, device, data.ttl_days)
    uow.session.add(device)
    try:
        uow.session.flush()
    except IntegrityError as exc:  # a concurrent create of the same id won the race
        raise DomainError(f"device id {data.id} is already taken; choose another") from exc
    return _with_token(uow, device, token, "created")


def reissue_token(
    uow: UnitOfWork,
    tokens: TokenService,
    restaurant_id: int,
    device_id: str,
    ttl_days: int,
    *,
    ttl_seconds: int | None = None,
) -> IssuedDevice:
    """A new token for the device; the broker stops accepting the previous one (its jti no longer matches).
    Locked: two re-issues at once leave one current token, the one whose answer came last.
    `ttl_seconds` overrides `ttl_days` (`orderbus token --ttl 1h` re-issues through here too)."""
    device = get_device(uow, restaurant_id, device_id, lock=True)
    if device.revoked:
        raise DomainError(f"device {device_id} is revoked; register a new device instead")
    token = _issue(tokens, device, ttl_days, ttl_seconds)
    uow.session.add(device)
    return _with_token(uow, device, token, "token_reissued")


def issue_for_subject(
    uow: UnitOfWork,
    tokens: TokenService,
    *,
    sub: str,
    role: str,
    restaurant_id: int | None,
    station: str | None,
    ttl_seconds: int,
) -> IssuedDevice | None:
    """`orderbus token` for a registered device: re-issued through its record as the API does, so the broker
    takes it (a token minted beside the record would be refused as replaced) and the previous one stops working.
    None when `sub` is no registered device (the caller signs a plain token); DomainError when the asked-for
    token contradicts the record (another role, restaurant or station)."""
    device = uow.session.get(Device, sub)
    if device is None:
        return None
    record = f"{sub} is a registered {device.kind} of restaurant {device.restaurant_id}"
    if role != device.kind or restaurant_id != device.restaurant_id:
        raise DomainError(f"{record}; use --role {device.kind} --restaurant {device.restaurant_id}")
    if station != device.station:
        raise DomainError(f"{record} at station {device.station}; use --station {device.station}")
    return reissue_token(uow, tokens, device.restaurant_id, sub, 0, ttl_seconds=ttl_seconds)


def revoke_device(uow: UnitOfWork, restaurant_id: int, device_id: str) -> Device:
    """Mark the device revoked; revoking it again changes nothing (locked: two at once emit one event)."""
    device = get_device(uow, restaurant_id, device_id, lock=True)
    if device.revoked:
        return device
    device.revoked = True
    device.revoked_at = utcnow()
    uow.session.add(device)
    uow.session.flush()
    uow.emit(restaurant_id, events.device_updated("revoked", device))
    return device


def _issue(tokens: TokenService, device: Device, ttl_days: int, ttl_seconds: int | None = None) -> str:
    """Sign a token for the device and remember its jti and expiry on the row (not yet flushed)."""
    token = tokens.issue(
        sub=device.id,
        role=device.kind,
        rid=device.restaurant_id,
        audience="mqtt",
        ttl_seconds=ttl_seconds if ttl_seconds is not None else ttl_days * SECONDS_PER_DAY,
        extra={"station": device.station} if device.station else None,
    )
    claims = tokens.verify(token, audience="mqtt")
    device.token_jti = claims["jti"]
    device.token_expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    return token


def _with_token(uow: UnitOfWork, device: Device, token: str, action: str) -> IssuedDevice:
    uow.session.flush()
    uow.emit(device.restaurant_id, events.device_updated(action, device))
    return IssuedDevice(device, token)


@dataclass(frozen=True)
class DeviceDenylist:
    """What the broker refuses beyond a token's signature and expiry, from one snapshot of the device table.

    `revoked`: ids of revoked devices. `jti`: the current token's jti of each registered, unrevoked
    device that has one. Subjects that are not registered devices are not refused here (tokens the
    CLI mints for unregistered devices keep working).
    """

    revoked: frozenset[str]
    jti: dict[str, str]

    def refuses(self, claims: dict[str, Any]) -> bool:
        if claims.get("role") not in DEVICE_ROLES:
            return False
        sub = claims.get("sub")
        if sub in self.revoked:
            return True
        current = self.jti.get(sub) if isinstance(sub, str) else None
        return current is not None and claims.get("jti") != current


def token_denylist(engine: Engine) -> DeviceDenylist:
    """One small query; the broker calls this every half second."""
    with engine.connect() as connection:
        rows = connection.execute(select(col(Device.id), col(Device.revoked), col(Device.token_jti))).all()
    return DeviceDenylist(
        revoked=frozenset(device_id for device_id, revoked, _ in rows if revoked),
        jti={device_id: jti for device_id, revoked, jti in rows if not revoked and jti is not None},
    )


def refuses_token(uow: UnitOfWork, claims: dict[str, Any]) -> bool:
    """The broker's denylist rule (`DeviceDenylist.refuses`) for one token, from its device's row alone."""
    sub = claims.get("sub")
    device = uow.session.get(Device, sub) if isinstance(sub, str) else None
    if device is None:
        return False
    revoked = frozenset({device.id}) if device.revoked else frozenset()
    jti = {device.id: device.token_jti} if not device.revoked and device.token_jti is not None else {}
    return DeviceDenylist(revoked, jti).refuses(claims)


@dataclass(frozen=True)
class TokenStatus:
    """What the bus makes of a device's broker token: `reason` None when the broker accepts it, else one word
    (`expired`, `revoked`, `replaced`, `wrong_role`, `unknown_device`, or a TokenError reason such as
    `bad_signature`) and `detail`, one sentence. MQTT 3.1.1's CONNACK cannot say any of this; the API can."""

    reason: str | None
    detail: str
    claims: dict[str, Any] | None = None
    device: Device | None = None
    at: datetime | None = None  # when it was revoked, or when it expired


def token_status(uow: UnitOfWork, tokens: TokenService, token: str) -> TokenStatus:
    """Why the broker refuses this token, or that it does not. The signature is checked first, so a
    revoked or expired token still gets its reason, and a forged one learns nothing about any device."""
    try:
        claims = tokens.verify(token, "mqtt", allow_expired=True)
    except TokenError as exc:
        return TokenStatus(exc.reason, str(exc))
    role, sub, rid = claims["role"], claims["sub"], claims.get("rid")
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if role not in DEVICE_ROLES:
        return TokenStatus("wrong_role", f"role {role} is not a device's ({', '.join(sorted(DEVICE_ROLES))})", claims)
    device = uow.session.get(Device, sub)
    if device is not None and device.restaurant_id != rid:
        return TokenStatus("unknown_device", f"no device {sub} in restaurant {rid}", claims)
    if device is not None and device.revoked:
        return TokenStatus("revoked", f"device {sub} is revoked", claims, device, device.revoked_at)
    if device is not None and device.kind != role:
        return TokenStatus("wrong_role", f"device {sub} is a {device.kind}, the token says {role}", claims, device)
    if device is not None and refuses_token(uow, claims):
        return TokenStatus("replaced", f"device {sub} was given a newer token", claims, device)
    if expires <= datetime.now(UTC):
        return TokenStatus("expired", "token has expired", claims, device, expires)
    return TokenStatus(None, "the broker accepts this token", claims, device, expires)


def record_presence(uow: UnitOfWork, device: Device, state: str, boot_id: str | None) -> bool:
    """Apply a presence message; False when it is a leftover of an earlier run (see `domain.presence_applies`)."""
    if state not in PRESENCE_STATES:
        raise DomainError(f"state must be one of {sorted(PRESENCE_STATES)}")
    # The boot_id decides, so read it locked and fresh: two ingests (or a retained status and the
    # Last Will) racing must not let the older run's state win.
    device = locked(uow.session, Device, device.id) or device
    if not domain.presence_applies(device.boot_id, state, boot_id):
        return False
    device.presence = state
    device.boot_id = boot_id
    uow.session.add(device)
    return True
