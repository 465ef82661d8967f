"""The pure access core with an in-memory view: every reason, temp-key windows, DST."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doorphoned.access.credentials import encode_qr
from doorphoned.access.decide import Reason, TempKeyRecord, UserRecord, decide
from doorphoned.core.presentations import CardTap, ExitButton, InstallerOpen, PinEntry, QrScan, RemoteOpen
from doorphoned.core.schedule import WeeklyWindow

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday, 13:00 in Berlin


@dataclass
class View:
    users_by_pin: dict[str, UserRecord] = field(default_factory=dict)
    users_by_card: dict[str, UserRecord] = field(default_factory=dict)
    keys_by_pin: dict[str, TempKeyRecord] = field(default_factory=dict)
    uses: dict[tuple[str, int], int] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)
    doors: frozenset[int] = frozenset({1, 2})
    tz: ZoneInfo = BERLIN

    def door_ids(self):
        return self.doors

    def timezone(self):
        return self.tz

    def user_by_pin(self, pin):
        return self.users_by_pin.get(pin)

    def key_by_pin(self, pin):
        return self.keys_by_pin.get(pin)

    def user_by_card(self, uid):
        return self.users_by_card.get(uid)

    def user_by_id(self, user_id):
        return next((u for u in [*self.users_by_pin.values(), *self.users_by_card.values()] if u.id == user_id), None)

    def key_uses(self, key_id, door):
        return self.uses.get((key_id, door), 0)

    def locked_out(self, source, now):
        return source in self.locked


ALICE = UserRecord("u1", "Alice", doors=frozenset({1}), windows=(WeeklyWindow.parse("mon-fri 08:00-18:00"),))
BOB = UserRecord("u2", "Bob", enabled=False)
KEY = TempKeyRecord("tk-1", "Plumber", frozenset({1}), "never", NOW - timedelta(hours=1), NOW + timedelta(days=1),
                    each_door_counts=2)


def view() -> View:
    return View(users_by_pin={"2580": ALICE, "7391": BOB}, users_by_card={"04A1B2C3": ALICE},
                keys_by_pin={"48151623": KEY})


def test_exit_button_opens_its_own_door_only():
    assert decide(ExitButton(1), 1, NOW, view()).granted
    refused = decide(ExitButton(1), 2, NOW, view())
    assert not refused.granted and refused.reason is Reason.DOOR_NOT_ALLOWED


def test_installer_open_is_logged_with_uid():
    decision = decide(InstallerOpen(1001), 2, NOW, view())
    assert decision.granted and decision.credential == "installer" and decision.subject == "uid 1001"


@pytest.mark.parametrize(("credential", "door", "at", "reason"), [
    (PinEntry("2580"), 1, NOW, Reason.GRANTED),
    (PinEntry("2580"), 9, NOW, Reason.UNKNOWN_DOOR),
    (PinEntry("0000"), 1, NOW, Reason.UNKNOWN),
    (PinEntry("12a4"), 1, NOW, Reason.MALFORMED),
    (PinEntry("123"), 1, NOW, Reason.MALFORMED),
    (PinEntry("", problem="entry longer than 16 keys"), 1, NOW, Reason.MALFORMED),
    (PinEntry("7391"), 1, NOW, Reason.DISABLED),
    (PinEntry("2580"), 2, NOW, Reason.DOOR_NOT_ALLOWED),
    (PinEntry("2580"), 1, NOW + timedelta(hours=6), Reason.OUTSIDE_SCHEDULE),
    (CardTap("04A1B2C3"), 1, NOW, Reason.GRANTED),
    (CardTap("04FFFFFF"), 1, NOW, Reason.UNKNOWN),
    (PinEntry("48151623"), 1, NOW, Reason.GRANTED),
    (PinEntry("48151623"), 2, NOW, Reason.DOOR_NOT_ALLOWED),
    (PinEntry("48151623"), 1, NOW - timedelta(hours=2), Reason.NOT_YET_VALID),
    (PinEntry("48151623"), 1, NOW + timedelta(days=1), Reason.EXPIRED),
    (QrScan(encode_qr("tk-1", "48151623")), 1, NOW, Reason.GRANTED),
    (QrScan(encode_qr("tk-other", "48151623")), 1, NOW, Reason.UNKNOWN),
    (QrScan("https://example.com/"), 1, NOW, Reason.MALFORMED),
    (QrScan("x" * 10_000), 1, NOW, Reason.MALFORMED),
    (QrScan("DPK1:tk-1:48151623:00000000"), 1, NOW, Reason.MALFORMED),
])
def test_reasons(credential, door, at, reason):
    decision = decide(credential, door, at, view())
    assert decision.reason is reason
    assert decision.granted == (reason is Reason.GRANTED)


@pytest.mark.parametrize(("command", "door", "reason"), [
    (RemoteOpen("portal"), 2, Reason.GRANTED),
    (RemoteOpen("app", "u1"), 1, Reason.GRANTED),
    (RemoteOpen("siri", "u1"), 2, Reason.DOOR_NOT_ALLOWED),
    (RemoteOpen("app", "u2"), 1, Reason.DISABLED),
    (RemoteOpen("watch", "nobody"), 1, Reason.UNKNOWN),
    (RemoteOpen("alexa"), 7, Reason.UNKNOWN_DOOR),
])
def test_remote_open(command, door, reason):
    decision = decide(command, door, NOW, view())
    assert decision.reason is reason and decision.subject.startswith(command.source)


def test_uses_exhausted_counts_per_door():
    v = view()
    v.uses[("tk-1", 1)] = 2
    assert decide(PinEntry("48151623"), 1, NOW, v).reason is Reason.USES_EXHAUSTED
    v.uses[("tk-1", 1)] = 1
    assert decide(PinEntry("48151623"), 1, NOW, v).granted


def test_locked_out_keypad_is_refused_without_looking_at_the_pin():
    v = view()
    v.locked.add("keypad")
    assert decide(PinEntry("2580", "keypad"), 1, NOW, v).reason is Reason.LOCKED_OUT
    assert decide(CardTap("04A1B2C3"), 1, NOW, v).granted  # other credential types keep working


def test_refusals_never_repeat_the_pin():
    for pin in ("0000", "48151623", "7391"):
        decision = decide(PinEntry(pin), 2, NOW, view())
        assert pin not in decision.subject + decision.detail


def _key(repeat, window=None, start=NOW - timedelta(days=10), end=NOW + timedelta(days=10)):
    return TempKeyRecord("tk-2", "Cleaner", frozenset({1}), repeat, start, end, window=window)


def test_daily_key_window():
    key = _key("daily", WeeklyWindow.parse("18:00-22:00"))
    v = View(keys_by_pin={"11223344": key})
    evening = datetime(2026, 11, 23, 19, 30, tzinfo=BERLIN)
    assert decide(PinEntry("11223344"), 1, evening, v).granted
    assert decide(PinEntry("11223344"), 1, evening.replace(hour=17, minute=59), v).reason is Reason.OUTSIDE_SCHEDULE


def test_weekly_key_only_on_its_days():
    key = _key("weekly", WeeklyWindow.parse("tue,thu 09:00-11:00"))
    v = View(keys_by_pin={"11223344": key})
    tuesday = datetime(2026, 11, 24, 10, 0, tzinfo=BERLIN)
    assert decide(PinEntry("11223344"), 1, tuesday, v).granted
    assert decide(PinEntry("11223344"), 1, tuesday + timedelta(days=1), v).reason is Reason.OUTSIDE_SCHEDULE


@given(st.integers(min_value=0, max_value=4 * 24 * 60))
def test_daily_key_on_dst_days_follows_the_wall_clock(offset_minutes):
    """Around both 2026 Berlin DST changes a daily 01:00-04:00 key is open exactly at local 01:00-03:59."""
    for change in (datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 10, 23, tzinfo=UTC)):
        key = _key("daily", WeeklyWindow.parse("01:00-04:00"), start=change - timedelta(days=5),
                   end=change + timedelta(days=10))
        at = change + timedelta(minutes=offset_minutes)
        local = at.astimezone(BERLIN)
        granted = decide(PinEntry("11223344"), 1, at, View(keys_by_pin={"11223344": key})).granted
        assert granted == (1 <= local.hour < 4)


@given(st.integers(min_value=-3 * 86400, max_value=3 * 86400))
def test_never_key_validity_is_an_instant_comparison(offset):
    """Start/end are instants: DST never stretches or shrinks a repeat-never key."""
    start = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    key = _key("never", start=start, end=start + timedelta(hours=3))
    key = TempKeyRecord(**{**key.__dict__, "each_door_counts": 5})
    at = start + timedelta(seconds=offset)
    decision = decide(PinEntry("11223344"), 1, at, View(keys_by_pin={"11223344": key}))
    assert decision.granted == (start <= at < start + timedelta(hours=3))
