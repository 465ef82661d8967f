"""Weekly time windows read in the site's time zone. Pure.

Why wall-clock minutes: an office manager writes "Mon-Fri 08:00-18:00" and means the clock on the
wall, on DST days too. So an instant is converted to local time with ``zoneinfo`` and compared as
(weekday, minute of day). On the spring-forward day the skipped hour simply never occurs; on the
fall-back day the repeated hour is inside the window both times it occurs.

A window whose end is before its start crosses midnight ("Fri 22:00-06:00"); the part after
midnight belongs to the day the window started on. ``24:00`` is allowed as an end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


class ScheduleError(ValueError):
    """A schedule, weekday list or time of day that cannot be read; the message says why."""


def parse_time_of_day(text: str, allow_24: bool = False) -> int:
    """``HH:MM`` -> minutes after midnight (``24:00`` only as an end)."""
    match = _TIME.match(text.strip())
    if not match:
        raise ScheduleError(f"time of day must be HH:MM, got {text!r}")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours == 24 and (minutes or not allow_24):
        raise ScheduleError(f"{text!r} is not a time of day" + (" (24:00 only as an end)" if not minutes else ""))
    return hours * 60 + minutes


def format_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_days(text: str) -> frozenset[int]:
    """``mon,wed,fri`` or ranges ``mon-fri`` (also ``sat-mon``), ``all``/``daily`` -> weekday numbers (Mon = 0)."""
    text = text.strip().lower()
    if text in ("all", "daily", "every day"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        start, end = _day(first), _day(last) if dash else _day(first)
        span = (end - start) % 7
        days.update((start + i) % 7 for i in range(span + 1))
    if not days:
        raise ScheduleError("no weekdays given (use e.g. mon,tue or mon-fri)")
    return frozenset(days)


def _day(name: str) -> int:
    key = name.strip()[:3]
    if key not in DAY_NAMES or name.strip() not in (key, _FULL_NAMES[DAY_NAMES.index(key)]):
        raise ScheduleError(f"unknown weekday {name.strip()!r} (use mon, tue, wed, thu, fri, sat, sun)")
    return DAY_NAMES.index(key)


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def format_days(days: frozenset[int]) -> str:
    if days == frozenset(range(7)):
        return "daily"
    return ",".join(DAY_NAMES[d] for d in sorted(days))


@dataclass(frozen=True)
class WeeklyWindow:
    """Days (Mon = 0) and minutes [start, end) of the day; end < start crosses midnight."""

    days: frozenset[int]
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ScheduleError("a window needs at least one weekday")
        if not 0 <= self.start < MINUTES_PER_DAY or not 0 < self.end <= MINUTES_PER_DAY:
            raise ScheduleError("window times must be within 00:00-24:00")
        if self.start == self.end:
            raise ScheduleError("a window must not start and end at the same time (use 00:00-24:00 for all day)")

    @classmethod
    def parse(cls, text: str) -> WeeklyWindow:
        """``"mon-fri 08:00-18:00"`` (days optional: ``"08:00-18:00"`` = every day)."""
        parts = text.strip().split()
        if len(parts) == 1:
            days, span = frozenset(range(7)), parts[0]
        elif len(parts) == 2:
            days, span = parse_days(parts[0]), parts[1]
        else:
            raise ScheduleError(f"window must look like 'mon-fri 08:00-18:00', got {text!r}")
        first, sep, last = span.partition("-")
        if not sep:
            raise ScheduleError(f"window times must look like 08:00-18:00, got {span!r}")
        return cls(days, parse_time_of_day(first), parse_time_of_day(last, allow_24=True))

    def contains_local(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or ((weekday - 1) % 7 in self.days
                                                                   and minute < self.end)

    def contains(self, instant: datetime, tz: ZoneInfo) -> bool:
        local = instant.astimezone(tz)
        return self.contains_local(local.weekday(), local.hour * 60 + local.minute)

    def __str__(self) -> str:
        return f"{format_days(self.days)} {format_minutes(self.start)}-{format_minutes(self.end)}"

    def as_dict(self) -> dict[str, object]:
        return {"days": sorted(self.days), "from": format_minutes(self.start), "to": format_minutes(self.end)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> WeeklyWindow:
        days = data.get("days")
        if not isinstance(days, list) or not all(isinstance(d, int) for d in days):
            raise ScheduleError("window days must be a list of weekday numbers 0-6")
        return cls(frozenset(days), parse_time_of_day(str(data.get("from", ""))),
                   parse_time_of_day(str(data.get("to", "")), allow_24=True))


def in_any_window(windows: tuple[WeeklyWindow, ...], instant: datetime, tz: ZoneInfo) -> bool:
    """No windows means no time restriction."""
    return not windows or any(w.contains(instant, tz) for w in windows)


def parse_local_datetime(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is read in ``tz``.

    A local time that does not exist (skipped by a spring-forward change) or exists twice (the
    repeated hour in autumn) is refused rather than guessed: the installer adds an offset.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ScheduleError(f"not an ISO 8601 date/time: {text!r} (e.g. 2026-03-29T08:00 or 2026-03-29T08:00+02:00)") \
            from exc
    if value.tzinfo is not None:
        return value
    first, second = value.replace(tzinfo=tz, fold=0), value.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != value:
        raise ScheduleError(f"{text} does not exist in {tz.key} (clocks go forward at that hour)")
    if first.utcoffset() != second.utcoffset():
        raise ScheduleError(f"{text} happens twice in {tz.key} (clocks go back); add an offset, e.g. "
                            f"{first.isoformat()} or {second.isoformat()}")
    return first
