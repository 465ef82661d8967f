"""Instants for tests, computed from today, so that no test depends on the calendar date.

A test that compares a literal date with the wall clock passes until that date and then fails on every
machine at once. Times the daemon judges by its own clock (a keypad entry, a key's creation) come from
here; times given to ``access check --at`` may be anything, as long as they agree with the keys a test
created.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

MINUTE = "%Y-%m-%dT%H:%M"


def from_now(days: float = 0.0) -> str:
    """The instant ``days`` from now as a local ``YYYY-MM-DDTHH:MM`` (the site's time zone applies)."""
    return (datetime.now(UTC) + timedelta(days=days)).strftime(MINUTE)


def monday_ahead(weeks: int = 8) -> date:
    """A Monday at least ``weeks`` weeks from today: far enough that nothing made for it is in the past."""
    day = datetime.now(UTC).date() + timedelta(weeks=weeks)
    return day + timedelta(days=(7 - day.weekday()) % 7)


def at(day: date, time_of_day: str, days: int = 0) -> str:
    """``day`` (plus ``days``) at ``HH:MM``, in the form ``--at`` and temp keys take."""
    return f"{(day + timedelta(days=days)).isoformat()}T{time_of_day}"
