"""Keypad brute-force protection as a pure state machine.

Rule: ``failures`` wrong entries within ``window`` seconds lock the source for ``first`` seconds;
each further lockout in the same streak doubles the time, up to ``maximum``. A correct PIN, or
``maximum`` seconds without a failure after the last lockout ended, ends the streak. While locked,
entries are refused without being checked, so a locked keypad gives an attacker no answer at all. Other credential types
(cards, QR, exit buttons) are never affected: they have their own source names.

Times are epoch seconds (wall clock): the state is persisted and must mean the same after a reboot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class LockoutPolicy:
    failures: int = 5
    window: float = 60.0
    first: float = 30.0
    maximum: float = 900.0

    def duration(self, level: int) -> float:
        return float(min(self.first * 2 ** (level - 1), self.maximum))


@dataclass(frozen=True)
class LockoutState:
    failures: tuple[float, ...] = field(default_factory=tuple)
    locked_until: float = 0.0
    level: int = 0
    last_failure: float = 0.0

    def is_locked(self, now: float) -> bool:
        return now < self.locked_until

    def as_dict(self) -> dict[str, Any]:
        return {"failures": list(self.failures), "locked_until": self.locked_until, "level": self.level,
                "last_failure": self.last_failure}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockoutState:
        return cls(tuple(float(f) for f in data.get("failures", [])), float(data.get("locked_until", 0)),
                   int(data.get("level", 0)), float(data.get("last_failure", 0)))


def record_failure(state: LockoutState, now: float, policy: LockoutPolicy) -> LockoutState:
    """Count a wrong entry; the returned state is locked if this one crossed the threshold."""
    quiet_since = max(state.last_failure, state.locked_until)
    level = state.level if now - quiet_since < policy.maximum else 0
    recent = (*tuple(t for t in state.failures if now - t < policy.window), now)
    if len(recent) < policy.failures:
        return LockoutState(recent, state.locked_until, level, now)
    level += 1
    return LockoutState((), now + policy.duration(level), level, now)


def record_success(state: LockoutState) -> LockoutState:
    return replace(state, failures=(), level=0)
