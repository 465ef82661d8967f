"""Weekly windows and dates in the site time zone, around midnight and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from doorphoned.core.schedule import (
    ScheduleError,
    WeeklyWindow,
    parse_days,
    parse_local_datetime,
    parse_time_of_day,
)

BERLIN = ZoneInfo("Europe/Berlin")
SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST
AUTUMN = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 03:00 CEST -> 02:00 CET
instants = st.integers(min_value=-3 * 86400, max_value=3 * 86400).flatmap(
    lambda s: st.sampled_from([SPRING + timedelta(seconds=s), AUTUMN + timedelta(seconds=s)]))
minutes = st.integers(min_value=0, max_value=24 * 60 - 1)
weekdays = st.frozensets(st.integers(0, 6), min_size=1)


def oracle(window: WeeklyWindow, instant: datetime, tz: ZoneInfo) -> bool:
    """An independent reading: walk back minute by minute over local wall time to the window's start day."""
    local = instant.astimezone(tz)
    minute = local.hour * 60 + local.minute
    day = local.weekday()
    if window.start < window.end:
        return day in window.days and window.start <= minute < window.end
    today_part = day in window.days and minute >= window.start
    yesterday = (local.date() - timedelta(days=1)).weekday()
    return today_part or (yesterday in window.days and minute < window.end)


@given(instants, weekdays, minutes, minutes)
def test_window_matches_local_wall_clock_across_dst(instant, days, start, end):
    assume(start != end)
    window = WeeklyWindow(days, start, end or 24 * 60)
    assert window.contains(instant, BERLIN) == oracle(window, instant, BERLIN)


@given(instants)
def test_all_day_window_always_contains(instant):
    assert WeeklyWindow(frozenset(range(7)), 0, 24 * 60).contains(instant, BERLIN)


def test_spring_forward_hour_does_not_exist_and_window_shrinks():
    window = WeeklyWindow.parse("sun 01:00-04:00")  # 2026-03-29 is a Sunday
    inside = [SPRING + timedelta(minutes=m) for m in range(-120, 240)
              if window.contains(SPRING + timedelta(minutes=m), BERLIN)]
    assert len(inside) == 120  # 01:00-02:00 CET and 03:00-04:00 CEST: two real hours, not three
    assert window.contains(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), BERLIN)  # 01:30 CET
    assert window.contains(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), BERLIN)  # 03:30 CEST
    assert not window.contains(datetime(2026, 3, 29, 2, 0, tzinfo=UTC), BERLIN)  # 04:00 CEST


def test_fall_back_repeated_hour_is_inside_twice():
    window = WeeklyWindow.parse("sun 02:00-03:00")  # 2026-10-25 is a Sunday
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert window.contains(first, BERLIN) and window.contains(second, BERLIN)


def test_window_across_midnight_belongs_to_its_start_day():
    night = WeeklyWindow.parse("fri 22:00-06:00")
    tz = ZoneInfo("UTC")
    assert night.contains(datetime(2026, 11, 27, 23, 0, tzinfo=UTC), tz)  # Friday 23:00
    assert night.contains(datetime(2026, 11, 28, 5, 59, tzinfo=UTC), tz)  # Saturday 05:59
    assert not night.contains(datetime(2026, 11, 28, 6, 0, tzinfo=UTC), tz)
    assert not night.contains(datetime(2026, 11, 28, 23, 0, tzinfo=UTC), tz)  # Saturday night: not listed
    assert not night.contains(datetime(2026, 11, 27, 5, 0, tzinfo=UTC), tz)  # Friday morning: Thursday's part


@pytest.mark.parametrize(("text", "days"), [("mon-fri", {0, 1, 2, 3, 4}), ("sat-mon", {5, 6, 0}),
                                            ("mon,wed,Friday", {0, 2, 4}), ("daily", set(range(7)))])
def test_parse_days(text, days):
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize("text", ["", "funday", "mon-xyz", "mo", "monday-", ","])
def test_parse_days_rejects(text):
    with pytest.raises(ScheduleError):
        parse_days(text)


@pytest.mark.parametrize("text", ["24:01", "25:00", "7", "12:60", "ab:cd", "24:00"])
def test_time_of_day_rejects(text):
    with pytest.raises(ScheduleError):
        parse_time_of_day(text)


def test_window_rejects_empty_span():
    with pytest.raises(ScheduleError, match="same time"):
        WeeklyWindow.parse("mon 08:00-08:00")


def test_local_datetime_refuses_nonexistent_and_ambiguous_times():
    with pytest.raises(ScheduleError, match="does not exist"):
        parse_local_datetime("2026-03-29T02:30", BERLIN)
    with pytest.raises(ScheduleError, match="happens twice"):
        parse_local_datetime("2026-10-25T02:30", BERLIN)
    assert parse_local_datetime("2026-10-25T02:30+01:00", BERLIN).utcoffset() == timedelta(hours=1)
    assert parse_local_datetime("2026-07-01", BERLIN) == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="ISO 8601"):
        parse_local_datetime("2026-02-30T10:00", BERLIN)
    with pytest.raises(ScheduleError, match="ISO 8601"):
        parse_local_datetime("2026-01-01T10:00+25:00", BERLIN)
