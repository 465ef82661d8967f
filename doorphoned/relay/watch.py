"""Door supervision as a pure state machine: held-open and forced-open alarms.

No timers and no I/O: the door controller feeds it instants (monotonic seconds) and sensor
changes, and asks when it next needs to be woken. That makes the alarm rules testable to the
millisecond without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmChange:
    kind: str  # "held_open" | "forced_open"
    active: bool
    detail: str = ""


class DoorWatch:
    """Rules:

    * forced open: the door opens while locked and outside every authorised window (a grant's
      trigger delay + hold time + grace). Cleared when the door closes.
    * held open: the door stays open longer than ``held_open_after`` seconds (0 = never), however
      it was opened. Cleared when the door closes.
    """

    def __init__(self, held_open_after: float, grace: float) -> None:
        self.held_open_after = held_open_after
        self.grace = grace
        self.is_open: bool | None = None
        self.unlocked = False
        self.authorised_until = float("-inf")
        self.opened_at: float | None = None
        self.active: set[str] = set()

    def authorise(self, now: float, seconds: float) -> None:
        """A grant was issued: opening within ``seconds`` (+ grace) is legitimate."""
        self.authorised_until = max(self.authorised_until, now + seconds + self.grace)

    def lock_changed(self, now: float, unlocked: bool) -> None:
        self.unlocked = unlocked
        if not unlocked:
            self.authorised_until = max(self.authorised_until, now + self.grace)

    def sensor(self, now: float, is_open: bool) -> list[AlarmChange]:
        was_open, self.is_open = self.is_open, is_open
        if is_open == was_open:
            return []
        if not is_open:
            self.opened_at = None
            cleared = [AlarmChange(kind, False, "door closed") for kind in sorted(self.active)]
            self.active.clear()
            return cleared
        self.opened_at = now
        if was_open is None:  # first reading at start: an open door is not an intrusion
            return []
        if not self.unlocked and now > self.authorised_until:
            self.active.add("forced_open")
            return [AlarmChange("forced_open", True, "opened without a grant or exit request")]
        return []

    def tick(self, now: float) -> list[AlarmChange]:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        self.active.add("held_open")
        return [AlarmChange("held_open", True, f"open for more than {self.held_open_after:g} s")]

    def next_deadline(self) -> float | None:
        if self.opened_at is None or self.held_open_after <= 0 or "held_open" in self.active:
            return None
        return self.opened_at + self.held_open_after
