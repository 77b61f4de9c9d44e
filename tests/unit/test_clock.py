"""The restaurant's clock (`core.clock`): local dates, business days around midnight, the day start and
daylight-saving changes, and why an item can or cannot be ordered."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import clock


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_the_local_date_is_the_restaurants_not_utcs():
    instant = utc(2026, 3, 1, 23, 30)  # a Sunday night in London, Monday morning in Tokyo
    assert clock.local_date(instant, "UTC") == date(2026, 3, 1)
    assert clock.local_date(instant, "Asia/Tokyo") == date(2026, 3, 2)
    assert clock.local_date(instant, "America/Los_Angeles") == date(2026, 3, 1)
    assert clock.local_date(utc(2026, 3, 2, 7, 0), "America/Los_Angeles") == date(2026, 3, 1)  # 23:00 the day before


def test_a_naive_instant_is_read_as_utc():
    """SQLite hands datetimes back without a zone; every one we store is UTC."""
    assert clock.local_date(datetime(2026, 3, 1, 23, 30), "Asia/Tokyo") == date(2026, 3, 2)


@pytest.mark.parametrize(
    ("local_hour", "minute", "expected_day"),
    [(0, 0, 2), (1, 30, 2), (3, 59, 2), (4, 0, 3), (12, 0, 3), (23, 59, 3)],
)
def test_the_business_day_starts_at_the_day_start_hour(local_hour: int, minute: int, expected_day: int):
    """01:30 on the 3rd belongs to the 2nd's service; 04:00 opens the 3rd's."""
    instant = datetime(2026, 6, 3, local_hour, minute, tzinfo=clock.zone("Europe/Paris"))
    assert clock.business_date(instant, "Europe/Paris", 4) == date(2026, 6, expected_day)


def test_a_day_start_of_zero_is_the_calendar_date():
    instant = datetime(2026, 6, 3, 0, 0, tzinfo=clock.zone("Europe/Paris"))
    assert clock.business_date(instant, "Europe/Paris", 0) == date(2026, 6, 3)
    assert clock.business_date(instant - timedelta(microseconds=1), "Europe/Paris", 0) == date(2026, 6, 2)


def test_spring_forward_at_the_day_start_hour():
    """Paris, 29 March 2026: 02:00 CET jumps to 03:00 CEST. With the day starting at 02:00 (an hour the
    wall clock skips), the new day starts at the jump itself: 00:59:59 UTC is still the 28th's service,
    01:00 UTC (03:00 CEST) is the 29th's."""
    jump = utc(2026, 3, 29, 1, 0)
    assert clock.business_date(jump - timedelta(seconds=1), "Europe/Paris", 2) == date(2026, 3, 28)
    assert clock.business_date(jump, "Europe/Paris", 2) == date(2026, 3, 29)
    # with the usual 04:00 start, the day starts at 04:00 CEST = 02:00 UTC, 23 hours after the 28th's
    assert clock.business_date(utc(2026, 3, 29, 1, 59), "Europe/Paris", 4) == date(2026, 3, 28)
    assert clock.business_date(utc(2026, 3, 29, 2, 0), "Europe/Paris", 4) == date(2026, 3, 29)


def test_fall_back_through_the_day_start_hour():
    """Paris, 25 October 2026: 03:00 CEST goes back to 02:00 CET, so 02:xx happens twice. With the day
    starting at 03:00, both 02:xx hours are still the 24th's service (the night runs 25 hours), and the
    25th's starts at 03:00 CET = 02:00 UTC."""
    first_two = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    second_two = utc(2026, 10, 25, 1, 30)  # 02:30 CET
    assert clock.local_time(first_two, "Europe/Paris").hour == clock.local_time(second_two, "Europe/Paris").hour == 2
    assert clock.business_date(first_two, "Europe/Paris", 3) == date(2026, 10, 24)
    assert clock.business_date(second_two, "Europe/Paris", 3) == date(2026, 10, 24)
    assert clock.business_date(utc(2026, 10, 25, 1, 59, 59), "Europe/Paris", 3) == date(2026, 10, 24)
    assert clock.business_date(utc(2026, 10, 25, 2, 0), "Europe/Paris", 3) == date(2026, 10, 25)


ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Auckland"]
INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC))


@given(INSTANTS, st.sampled_from(ZONES), st.integers(0, 23))
def test_the_business_date_is_the_local_date_or_the_day_before(instant: datetime, zone: str, start: int):
    local = clock.local_time(instant, zone)
    expected = local.date() if local.hour >= start else local.date() - timedelta(days=1)
    assert clock.business_date(instant, zone, start) == expected


@given(INSTANTS, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)), st.sampled_from(ZONES))
def test_the_business_date_never_goes_back(instant: datetime, later: timedelta, zone: str):
    """In zones whose clock changes stay away from midnight, a later instant is never an earlier service
    (order numbers count on within a day). The hours straddle every change of these zones in 2000-2037."""
    for start in (0, 2, 3, 4):
        assert clock.business_date(instant + later, zone, start) >= clock.business_date(instant, zone, start)


@given(INSTANTS, st.sampled_from(ZONES))
def test_every_business_day_is_at_most_25_hours(instant: datetime, zone: str):
    """25 hours later it is always another service; 23 hours earlier at most one day before."""
    day = clock.business_date(instant, zone, 4)
    assert clock.business_date(instant + timedelta(hours=25, seconds=1), zone, 4) > day
    assert clock.business_date(instant - timedelta(hours=23), zone, 4) >= day - timedelta(days=1)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe/../UTC", "utc\0"])
def test_an_unknown_zone_is_refused(name: str):
    with pytest.raises(ValueError, match="unknown time zone"):
        clock.valid_timezone(name)


def test_a_known_zone_is_kept():
    assert clock.valid_timezone("America/Argentina/Buenos_Aires") == "America/Argentina/Buenos_Aires"


def test_a_day_start_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"0\.\.23"):
        clock.business_date(utc(2026, 1, 1), "UTC", 24)


SUNDAY, MONDAY = date(2026, 3, 1), date(2026, 3, 2)


def test_availability_tells_off_from_not_today():
    assert clock.availability(True, [], MONDAY) == "available"  # empty: every day
    assert clock.availability(True, [7], SUNDAY) == "available"
    assert clock.availability(True, [7], MONDAY) == "not_today"
    assert clock.availability(False, [7], SUNDAY) == "off"
    assert clock.availability(False, [7], MONDAY) == "off"  # switched off says so, whatever the day


def test_an_item_sold_on_sundays_follows_the_restaurants_calendar_not_utcs():
    """Sunday 23:30 in Los Angeles is Monday 07:30 UTC: the Sunday item is still for sale there."""
    instant = utc(2026, 3, 2, 7, 30)
    assert clock.availability(True, [7], clock.local_date(instant, "America/Los_Angeles")) == "available"
    assert clock.availability(True, [7], clock.local_date(instant, "UTC")) == "not_today"
