"""`orderbus token`'s issuing: tokens that cannot trap whoever runs it.

A token signed with a key no bus has is refused at CONNECT with nothing but "not authorised", so a data
directory without orderbus's key is refused here instead of getting a fresh key. A printer token without a
station can subscribe to nothing. And a registered device's token is issued through its record, as the API
re-issues one (core/services/devices.py): a token minted beside the record would be refused as replaced
by the first `POST …/devices/{id}/token`, and an earlier token of the device stops working, which is said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cli.runtime import token_service
from config.settings import Settings
from core import db
from core.domain import DomainError
from core.services import devices
from core.tokens import KEY_FILE, Audience
from core.topics import ROLES
from core.unit_of_work import UnitOfWork
from core.wake import SOCKET_NAME, SocketWake

_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenRefused(ValueError):
    """This token would not work, or would break another: one line saying why and what to do."""


@dataclass(frozen=True)
class Minted:
    token: str
    note: str  # one line for stderr: what the token is, and what it replaced


def parse_ttl(text: str) -> int:
    """`15m`, `1h`, `7d`, `90` (seconds) → seconds; ValueError otherwise."""
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError("use a positive number with s, m, h or d, e.g. 15m or 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


def shown_ttl(seconds: int) -> str:
    """3600 → `1h`: the way --ttl is written."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_data(settings: Settings) -> None:
    """TokenRefused unless the signing key is configured or the data directory already has orderbus's."""
    if settings.jwt_key is not None or (settings.data_dir / KEY_FILE).is_file():
        return
    raise TokenRefused(
        f"{settings.data_dir} holds no orderbus data (no {KEY_FILE}): a token signed there would be refused by "
        "every bus; give the bus's --data-dir (or --config), or start the bus there first (orderbus up --data-dir …)"
    )


def mint(
    settings: Settings,
    *,
    sub: str,
    role: str,
    restaurant: int | None,
    ttl_seconds: int,
    station: str | None,
    audience: Audience,
) -> Minted:
    """The token and its note; TokenRefused (or ValueError from the signer) when it cannot be made."""
    if role not in ROLES:  # what is wrong with the command line first, then with the data directory
        raise TokenRefused(f"unknown role {role!r}; one of {', '.join(sorted(ROLES))}")
    check_data(settings)
    if role == "printer" and not station:
        raise TokenRefused("a printer token needs --station (the kitchen station whose tickets it prints)")
    tokens = token_service(settings)
    issued = _through_record(settings, sub, role, restaurant, station, ttl_seconds) if audience == "mqtt" else None
    if issued is not None:
        return Minted(
            issued,
            f"{role} token for registered device {sub}, restaurant {restaurant}, valid {shown_ttl(ttl_seconds)}; "
            f"it replaces the device's previous token, which the broker refuses from now on",
        )
    extra = {"station": station} if station else None
    signed = tokens.issue(sub=sub, role=role, rid=restaurant, audience=audience, ttl_seconds=ttl_seconds, extra=extra)
    return Minted(
        signed,
        f"{role} token for {sub}, restaurant {restaurant}, valid {shown_ttl(ttl_seconds)}; "
        f"MQTT client id: {sub}[:suffix]",
    )


def _through_record(
    settings: Settings, sub: str, role: str, restaurant: int | None, station: str | None, ttl_seconds: int
) -> str | None:
    """Re-issue through the device's record when `sub` is a registered device; None when it is not (or there
    is no database yet: nothing can be registered in it)."""
    if settings.database_url is None and not Path(settings.data_dir / "orderbus.db").is_file():
        return None
    engine = db.make_engine(settings.db_url)
    wake = None if settings.database_url else SocketWake(settings.data_dir / SOCKET_NAME)
    try:
        db.check_current(engine)
        with UnitOfWork(engine, wake) as uow:
            issued = devices.issue_for_subject(
                uow,
                token_service(settings),
                sub=sub,
                role=role,
                restaurant_id=restaurant,
                station=station,
                ttl_seconds=ttl_seconds,
            )
            token = issued.token if issued is not None else None
            uow.commit()
            return token
    except DomainError as exc:
        raise TokenRefused(str(exc)) from None
    finally:
        if wake is not None:
            wake.close()
        engine.dispose()
