"""The access core: who may open which door, now, and why not. Pure: no I/O, no clock, no globals.

Every credential type ends in :func:`decide`. The caller (the gate) supplies the instant and a
read-only view of what the unit knows, so the same function answers live requests and
``access check --at`` questions identically. A refusal always carries a machine-readable reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Reason(StrEnum):
    """Why a decision came out the way it did (DESIGN §3); the string is the contract."""

    GRANTED = "granted"
    UNKNOWN = "unknown"
    UNKNOWN_DOOR = "unknown_door"
    DOOR_NOT_ALLOWED = "door_not_allowed"
    DISABLED = "disabled"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    OUTSIDE_SCHEDULE = "outside_schedule"
    USES_EXHAUSTED = "uses_exhausted"
    LOCKED_OUT = "locked_out"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class ExitButton:
    """The request-to-exit button wired to one door: it opens that door and no other."""

    door: int
    kind: str = "exit_button"

    @property
    def subject(self) -> str:
        return f"exit button {self.door}"


@dataclass(frozen=True)
class InstallerOpen:
    """``doorphonectl relay open`` by a local user the control socket already admitted."""

    uid: int
    kind: str = "installer"

    @property
    def subject(self) -> str:
        return f"uid {self.uid}"


Credential = ExitButton | InstallerOpen


class AccessView(Protocol):
    """What the core may read about the unit's current data."""

    def door_ids(self) -> frozenset[int]: ...


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: Reason
    credential: str
    subject: str
    door: int


def decide(credential: Credential, door: int, now: datetime, view: AccessView) -> Decision:
    """Decide whether ``credential`` opens ``door`` at ``now``."""
    del now  # no time rule applies to the spine's credentials; users and temp keys will use it
    if door not in view.door_ids():
        return _refuse(credential, door, Reason.UNKNOWN_DOOR)
    if isinstance(credential, ExitButton) and credential.door != door:
        return _refuse(credential, door, Reason.DOOR_NOT_ALLOWED)
    return Decision(True, Reason.GRANTED, credential.kind, credential.subject, door)


def _refuse(credential: Credential, door: int, reason: Reason) -> Decision:
    return Decision(False, reason, credential.kind, credential.subject, door)
