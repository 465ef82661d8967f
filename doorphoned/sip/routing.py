"""Call routing and DTMF codes: pure decisions, no SIP, no clock of their own (DESIGN §3).

Who rings, in which order, or why nobody does, is decided here from the call target's settings
and the instant; the call manager only carries the plan out. Keeping it pure lets every
preference, the do-not-disturb windows and the intercom permission be tested without a SIP stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from doorphoned.core.schedule import WeeklyWindow, in_any_window
from doorphoned.sip.config import CallTargetConfig

MAX_CODE = 4


@dataclass(frozen=True)
class CallPlan:
    """``waves`` ring one after the other, each for the ring timeout; in a wave every leg rings at
    once and the first answer wins. ``refused`` says why nobody is called (then ``waves`` is empty)."""

    target: str
    waves: tuple[tuple[str, ...], ...] = ()
    refused: str = ""

    @property
    def legs(self) -> int:
        return sum(len(w) for w in self.waves)


def plan_call(target: CallTargetConfig, now: datetime, tz: ZoneInfo) -> CallPlan:
    """Which URIs to ring for ``target`` at ``now``, following its contact preference."""
    label = target.name or str(target.id)
    if not target.intercom:
        return CallPlan(label, refused="intercom_off")
    if target.dnd and in_any_window(tuple(WeeklyWindow.parse(w) for w in target.dnd), now, tz):
        return CallPlan(label, refused="dnd")
    apps, monitors, phone = tuple(target.app), tuple(target.monitors), (target.phone,) if target.phone else ()
    if target.preference == "app":
        waves: tuple[tuple[str, ...], ...] = (apps + monitors,)
    elif target.preference == "phone":
        waves = (phone + monitors,)
    else:
        waves = (apps + monitors, phone)
    waves = tuple(_unique(w) for w in waves if w)
    if not waves:
        return CallPlan(label, refused="no_destination")
    return CallPlan(label, waves)


def plan_direct(uri: str) -> CallPlan:
    """``doorphonectl call sip:...``: one leg, no preference, no schedule."""
    return CallPlan(uri, ((uri,),))


def _unique(uris: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(uris))


def match_code(keys: str, codes: dict[int, str]) -> tuple[int | None, str]:
    """Feed the keys received so far in a call; return (door to open or None, keys to keep).

    A code matches when the keys end with it; the longest matching code wins (so with ``#`` and
    ``12#`` configured, ``12#`` opens the second door, not the first). After a match the keys are
    cleared; otherwise only the last few are kept, so a wrong code does nothing and a right one
    typed after it still works.
    """
    best: tuple[int, str] | None = None
    for door, code in codes.items():
        if code and keys.endswith(code) and (best is None or len(code) > len(best[1])):
            best = (door, code)
    if best is not None:
        return best[0], ""
    return None, keys[-(MAX_CODE - 1):] if MAX_CODE > 1 else ""


_URI_IN_BRACKETS = re.compile(r"<([^>]+)>")


def bare_uri(remote: str) -> str:
    """``"sipp" <sip:sipp@127.0.0.1>;tag=x`` -> ``sip:sipp@127.0.0.1``."""
    match = _URI_IN_BRACKETS.search(remote)
    return (match.group(1) if match else remote.split(";", maxsplit=1)[0]).strip()
