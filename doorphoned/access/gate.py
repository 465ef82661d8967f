"""The gate: where a credential becomes an opened door, in the order DESIGN §3 demands.

decide (pure) -> persist the record (fsynced; a temp key's use is taken in the same transaction)
-> actuate the lock -> publish. A crash between two steps can leave a record of a grant whose door
never opened, or waste a use, but never open a door unrecorded or give an extra use. A lock driver
failure turns the recorded grant into a ``lock_fault`` refusal (granted false), published as such, plus
a ``lock_fault`` entry; when the driver knows the lock did not move (``board_unreachable``: the relay
board is gone and its lines are released) a temp key's use is given back, otherwise (an HTTP bridge that
timed out may have opened) the use stays taken.

The decision's events are built in the record's transaction and handed to the *recorders* there
(:meth:`AccessGate.add_recorder`: the cloud outbox), so a kill between persist and publish cannot lose
the cloud's copy of a record (found by bench/chaos.py); the bus still gets them after the door moved.

Readers hand credentials to :meth:`AccessGate.present`, which also keeps the keypad lockout.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.decide import Decision, Reason, TempKeyRecord, UserRecord, decide
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import AccessDecided, AlarmChanged, Event, ExitButtonPressed, LockFault, TempKeyUsed
from doorphoned.core.feature import Feature, Tracker
from doorphoned.core.lockout import LockoutPolicy, record_failure, record_success
from doorphoned.core.ports import Doors, LockError
from doorphoned.core.presentations import Credential, ExitButton, PinEntry
from doorphoned.core.store import DoorLogEntry

log = logging.getLogger(__name__)

NOT_MOVED = frozenset({"board_unreachable", "relay_unavailable", "door_unavailable"})


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    opened: bool
    error: str = ""
    error_reason: str = ""

    @property
    def granted(self) -> bool:
        return self.decision.granted

    @property
    def reason(self) -> str:
        return self.decision.reason.value


class StoreAccessView:
    """The access core's view of the unit, backed by indexed SQLite lookups (no caching to go stale)."""

    def __init__(self, creds: CredentialStore, door_ids: frozenset[int], tz: ZoneInfo) -> None:
        self._creds = creds
        self._doors = door_ids
        self._tz = tz

    def door_ids(self) -> frozenset[int]:
        return self._doors

    def timezone(self) -> ZoneInfo:
        return self._tz

    def user_by_pin(self, pin: str) -> UserRecord | None:
        return self._creds.user_by_pin(pin)

    def key_by_pin(self, pin: str) -> TempKeyRecord | None:
        return self._creds.key_by_pin(pin)

    def user_by_card(self, uid: str) -> UserRecord | None:
        return self._creds.user_by_card(uid)

    def user_by_id(self, user_id: str) -> UserRecord | None:
        return self._creds.get_user(user_id)

    def key_uses(self, key_id: str, door: int) -> int:
        return self._creds.key_uses(key_id, door)

    def locked_out(self, source: str, now: datetime) -> bool:
        return self._creds.lockout(source).is_locked(now.timestamp())


class AccessGate:
    def __init__(self, creds: CredentialStore, bus: EventBus, clock: Clock, doors: Doors,
                 tz: Callable[[], ZoneInfo], lockout: LockoutPolicy) -> None:
        self._creds = creds
        self._bus = bus
        self._clock = clock
        self._doors = doors
        self._tz = tz
        self._deciding = 0  # door requests in progress
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.lockout_policy = lockout
        self._recorders: list[Callable[[Event], None]] = []
        self._rollbacks: list[Callable[[], None]] = []
        self.timers = Tracker("gate", clock)  # lockout alarm clears; cancelled when the access feature stops

    def add_recorder(self, recorder: Callable[[Event], None],
                     rolled_back: Callable[[], None] | None = None) -> Callable[[], None]:
        """Have ``recorder`` store each decision's events inside the door-log entry's transaction.

        A recorder raising ``sqlite3.Error`` rolls the record back: the credential is refused as a
        storage failure, exactly as when the entry itself cannot be written. ``rolled_back()`` is
        called after any such failure (the recorder's counts may include rows that were not kept).
        Returns its removal.
        """
        self._recorders.append(recorder)
        hooks = [rolled_back] if rolled_back is not None else []
        self._rollbacks.extend(hooks)

        def remove() -> None:
            self._recorders.remove(recorder)
            for hook in hooks:
                self._rollbacks.remove(hook)
        return remove

    def view(self) -> StoreAccessView:
        return StoreAccessView(self._creds, self._doors.door_ids, self._tz())

    def check(self, credential: Credential, door: int, at: datetime) -> Decision:
        """What would happen at ``at``: no record, no relay, no use taken (``access check``)."""
        return decide(credential, door, at, self.view())

    async def present(self, credential: Credential, doors: Sequence[int]) -> list[GateResult]:
        """A reader saw ``credential``: request each of its doors, then keep the keypad lockout."""
        results = [await self.request(credential, door) for door in doors]
        if isinstance(credential, PinEntry) and results:
            try:
                self._update_lockout(credential.source, [r.decision for r in results])
            except sqlite3.Error as exc:  # disk full: the entry was refused already; the reader keeps going
                log.error("keypad lockout of %s not updated: %s", credential.source, exc)
        return results

    async def quiet(self) -> None:
        """Returns once no door request is in progress.

        Bulk work on the loop (a credential snapshot's slices) waits here between its slices: a door
        request takes several turns of the loop (decide and record, the lock driver, the relay), and
        without this each turn queued behind a fresh slice, so a PIN typed during a 100,000-user
        snapshot waited for five slices instead of one.
        """
        await self._quiet.wait()

    async def request(self, credential: Credential, door_id: int) -> GateResult:
        self._deciding += 1
        self._quiet.clear()
        try:
            return await self._request(credential, door_id)
        finally:
            self._deciding -= 1
            if not self._deciding:
                self._quiet.set()

    async def _request(self, credential: Credential, door_id: int) -> GateResult:
        now = self._clock.now()
        decision = decide(credential, door_id, now, self.view())
        try:
            decision, events = self._persist(decision, now)
        except sqlite3.Error as exc:
            for hook in self._rollbacks:
                hook()
            if not (decision.granted and isinstance(credential, ExitButton)):
                log.critical("door %d: cannot record the decision (%s): not opening", door_id, exc)
                return GateResult(decision, opened=False, error=f"storage failure: {exc}", error_reason="storage")
            # Egress is life safety: an exit button opens even when the record cannot be written.
            log.critical("door %d: cannot record the exit request (%s): opening anyway", door_id, exc)
            events = self._events(decision, 0, stored=False)
        if not decision.granted:
            log.warning("door %d: %s refused (%s)", door_id, decision.subject, decision.reason.value)
            self._publish(events)
            return GateResult(decision, opened=False)
        try:
            await self._doors.door(door_id).open()
        except (LockError, LookupError) as exc:
            return self._lock_failed(decision, events, exc)
        log.log(25, "door %d opened for %s (%s)", door_id, decision.subject, decision.credential)
        self._publish(events)
        return GateResult(decision, opened=True)

    def _persist(self, decision: Decision, now: datetime) -> tuple[Decision, list[Event]]:
        """Write the entry (and take the use) and store the events with the recorders, in one transaction."""
        key = decision.key
        consume = None
        if decision.granted and key is not None and key.each_door_counts is not None:
            consume = (key.id, decision.door, key.each_door_counts)
        events: list[Event] = []

        def record(log_id: int, folded: bool) -> None:
            events[:] = self._events(decision, log_id, stored=bool(self._recorders), folded=folded)
            for event in events:
                for recorder in self._recorders:
                    recorder(event)

        if self._creds.record_access(self._entry(decision, now), consume, record) is None:
            # the last use went between decide and persist: refuse, and record that
            decision = replace(decision, granted=False, reason=Reason.USES_EXHAUSTED, detail="no use left")
            if self._creds.record_access(self._entry(decision, now), then=record) is None:
                raise AssertionError("a refusal takes no use, so it is always written")
        return decision, events

    @staticmethod
    def _entry(decision: Decision, now: datetime) -> DoorLogEntry:
        detail = {"detail": decision.detail} if decision.detail else {}
        return DoorLogEntry(
            ts=now, kind="access", door=decision.door, credential=decision.credential, subject=decision.subject,
            granted=decision.granted, reason=decision.reason.value, detail=detail,
            user_id=decision.user.id if decision.user else None, key_id=decision.key.id if decision.key else None)

    def _lock_failed(self, decision: Decision, events: list[Event], exc: Exception) -> GateResult:
        reason = exc.reason if isinstance(exc, LockError) else "door_unavailable"
        detail = exc.detail if isinstance(exc, LockError) else str(exc)
        log.error("door %d: lock failed for %s: %s", decision.door, decision.subject, detail)
        key = decision.key
        refund = (key.id, decision.door) if key is not None and key.each_door_counts is not None \
            and reason in NOT_MOVED else None
        log_id = next((e.log_id for e in events if isinstance(e, AccessDecided)), 0)
        if log_id:
            try:
                self._creds.record_lock_fault(log_id, reason, detail, refund)
            except sqlite3.Error as store_exc:
                log.critical("door %d: cannot record the lock fault (%s)", decision.door, store_exc)
        now = self._clock.now()
        # Not stored with the record: the cloud's recorder kept the grant, and this correction (same log_id)
        # reaches the outbox through the bus.
        self._bus.publish(AccessDecided(
            now, decision.door, decision.credential, decision.subject, False, "lock_fault", log_id,
            user_id=decision.user.id if decision.user else None, key_id=key.id if key else None))
        self._bus.publish(LockFault(now, decision.door, reason, detail))
        return GateResult(decision, opened=False, error=detail, error_reason=reason)

    def _events(self, decision: Decision, log_id: int, stored: bool, folded: bool = False) -> list[Event]:
        """The decision as bus events: AccessDecided, and TempKeyUsed when a temp key opened."""
        now = self._clock.now()
        events: list[Event] = [AccessDecided(
            now, decision.door, decision.credential, decision.subject, decision.granted, decision.reason.value, log_id,
            user_id=decision.user.id if decision.user else None, key_id=decision.key.id if decision.key else None,
            stored=stored, folded=folded)]
        key = decision.key
        if decision.granted and key is not None:
            left = None
            if key.each_door_counts is not None:
                left = key.each_door_counts - self._creds.key_uses(key.id, decision.door)
            events.append(TempKeyUsed(now, key.id, key.name, decision.door, left, stored=stored))
        return events

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._bus.publish(event)

    # ------------------------------------------------------------ keypad lockout
    def _update_lockout(self, source: str, decisions: list[Decision]) -> None:
        if any(d.reason is Reason.LOCKED_OUT for d in decisions):
            return
        state = self._creds.lockout(source)
        now = self._clock.now().timestamp()
        if all(d.wrong_pin for d in decisions):
            new = record_failure(state, now, self.lockout_policy)
            self._creds.save_lockout(source, new)
            if new.is_locked(now) and not state.is_locked(now):
                self._announce_lockout(source, new.locked_until - now, new.level)
        elif state.failures or state.level:  # a valid PIN (even one refused for its schedule) ends the streak
            self._creds.save_lockout(source, record_success(state))

    def _announce_lockout(self, source: str, seconds: float, level: int) -> None:
        failures = self.lockout_policy.failures
        detail = f"{source} locked for {seconds:.0f} s after {failures} wrong PINs (lockout {level})"
        log.warning("%s", detail)
        self._bus.publish(AlarmChanged(self._clock.now(), "keypad_lockout", True, None, detail))
        self._schedule_unlock_alarm(source, seconds)

    def _schedule_unlock_alarm(self, source: str, seconds: float) -> None:
        self.timers.later(seconds, self._lockout_over, source)

    def _lockout_over(self, source: str) -> None:
        self._bus.publish(AlarmChanged(self._clock.now(), "keypad_lockout", False, None, f"{source} unlocked"))

    def resume_lockouts(self) -> None:
        """After a restart, a lockout still running still ends with its alarm being cleared."""
        now = self._clock.now().timestamp()
        for source, state in self._creds.lockouts().items():
            if state.is_locked(now):
                self._schedule_unlock_alarm(source, state.locked_until - now)


class AccessFeature(Feature):
    """Turns exit-button presses into gate requests."""

    name = "access"

    def __init__(self, bus: EventBus, gate: AccessGate) -> None:
        super().__init__()
        self._bus = bus
        self.gate = gate

    async def start(self) -> None:
        self.on_stop(self._bus.subscribe(ExitButtonPressed, self._on_exit, self.name))
        self.gate.resume_lockouts()

    async def stop_feature(self) -> None:
        await self.gate.timers.cancel_all()  # started again (with the time left) by resume_lockouts

    def _on_exit(self, event: ExitButtonPressed) -> None:
        self.spawn(self.gate.request(ExitButton(event.door), event.door), f"exit-{event.door}")
