"""A restaurant's own clock: its local date, its business day, and whether an item can be sold now.

Pure functions of an instant, an IANA zone name and a day-start hour: nothing here reads the
server's clock or zone (the caller passes `now`), so tests drive time by passing instants.

Two dates, on purpose:

- the *local date* is the calendar date on the restaurant's wall clock. `available_days` is read
  against it: "Sunday brunch" is a Sunday on the wall clock, whatever the server's zone.
- the *business date* is the service an instant belongs to. A day's service runs from
  `day_starts_at` (local hour) to the same hour the next day, so an order at 01:30 belongs to
  yesterday's service: its order number continues yesterday's count, and the day's totals and the
  orders list's date range count it with yesterday. Order numbers restart at 1 with each business day.

Both are computed on the local wall clock (`astimezone`), so a daylight-saving change moves no
boundary: the business day starts the first instant the wall clock shows `day_starts_at` or later.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.domain import available_on  # ISO weekdays, empty = every day

DEFAULT_TIMEZONE = "UTC"
DEFAULT_DAY_STARTS_AT = 4  # a business day runs 04:00 to 04:00 local: late orders count with the evening

Availability = Literal["available", "off", "not_today"]


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The zone named `name` (IANA, e.g. `Europe/Paris`); ValueError for a name the system does not know.

    Names are checked before ZoneInfo sees them: it would read a path such as `../x` off the disk."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name or "\\" in name or "\0" in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from exc


def valid_timezone(name: str) -> str:
    """`name` when it is a zone this system knows; ValueError otherwise (a 422 at the API)."""
    zone(name)
    return name


def _aware(instant: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every one we store is UTC."""
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant


def local_time(instant: datetime, timezone: str) -> datetime:
    return _aware(instant).astimezone(zone(timezone))


def local_date(instant: datetime, timezone: str) -> date:
    """The calendar date on the restaurant's wall clock at `instant`."""
    return local_time(instant, timezone).date()


def business_date(instant: datetime, timezone: str, day_starts_at: int = DEFAULT_DAY_STARTS_AT) -> date:
    """The service `instant` belongs to: the local date, or the day before while the wall clock is
    still before `day_starts_at`."""
    if not 0 <= day_starts_at <= 23:
        raise ValueError(f"day_starts_at must be an hour 0..23, got {day_starts_at}")
    local = local_time(instant, timezone)
    return local.date() - timedelta(days=1) if local.hour < day_starts_at else local.date()


def availability(available: bool, available_days: Collection[int], local_day: date) -> Availability:
    """Why an item can or cannot be ordered on `local_day`: `off` (switched off by the staff) wins over
    `not_today` (its `available_days` leave this weekday out), which tells a guest to come back another day.
    Stock is another matter: an item sold out is still `available` here (its quantity says the rest)."""
    if not available:
        return "off"
    if not available_on(list(available_days), local_day):
        return "not_today"
    return "available"
