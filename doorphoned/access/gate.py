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

from doorphoned.access.credstore import CredentialStore, Recorded
from doorphoned.access.decide import Decision, PhoneKeyRecord, Reason, TempKeyRecord, UserRecord, decide
from doorphoned.access.signedkeys import Trust
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import AccessDecided, AlarmChanged, Event, ExitButtonPressed, LockFault, TempKeyUsed
from doorphoned.core.feature import Feature, Tracker
from doorphoned.core.lockout import LockoutPolicy, LockoutState, record_failure, record_success
from doorphoned.core.phonekeys import UnitKey
from doorphoned.core.ports import Doors, LockError
from doorphoned.core.presentations import Credential, ExitButton, PinEntry
from doorphoned.core.store import DoorLogEntry

log = logging.getLogger(__name__)

NO_TRUST = Trust()
PRUNE_EVERY = 6 * 3600.0  # seconds between two prunings of ended signed keys' revocations and use counts
MAX_SECRETS = 10_000  # BLE MAC keys kept (a unit with more phones derives the rest again: ~0.1 ms each)
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

    def __init__(self, creds: CredentialStore, door_ids: frozenset[int], tz: ZoneInfo, *, trust: Trust = NO_TRUST,
                 unit: UnitKey | None = None, secrets: dict[bytes, bytes] | None = None) -> None:
        self._creds = creds
        self._doors = door_ids
        self._tz = tz
        self._trust = trust
        self._unit = unit or UnitKey.ephemeral()
        self._secrets = {} if secrets is None else secrets  # ECDH results by public point, kept by the gate
        self.lockouts: dict[str, LockoutState] = {}  # what decide read: the record updates it, no second read

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
        state = self.lockouts[source] = self._creds.lockout(source)
        return state.is_locked(now.timestamp())

    def trust(self) -> Trust:
        return self._trust

    def revoked(self, key_id: str) -> bool:
        return self._creds.is_revoked(key_id)

    def key_by_id(self, key_id: str) -> TempKeyRecord | None:
        return self._creds.get_key(key_id)

    def signed_key_uses(self, key_id: str, door: int) -> int:
        return self._creds.signed_key_uses(key_id, door)
    def unit_id(self) -> str:
        return self._unit.unit_id

    def phone_key(self, key_id: str) -> PhoneKeyRecord | None:
        return self._creds.phone_key(key_id)

    def phone_key_by_tag(self, tag: bytes) -> PhoneKeyRecord | None:
        return self._creds.phone_key_by_tag(tag)

    def ble_counter(self, key: PhoneKeyRecord) -> int:
        return self._creds.ble_counter(key.public_point)

    def ble_secret(self, key: PhoneKeyRecord) -> bytes:
        secret = self._secrets.get(key.public_point)
        if secret is None:
            if len(self._secrets) >= MAX_SECRETS:
                self._secrets.clear()
            secret = self._secrets[key.public_point] = self._unit.ble_secret(key.public_point)
        return secret


class AccessGate:
    def __init__(self, creds: CredentialStore, bus: EventBus, clock: Clock, doors: Doors,
                 tz: Callable[[], ZoneInfo], lockout: LockoutPolicy, *,
                 trust: Callable[[], Trust] = lambda: NO_TRUST, unit: UnitKey | None = None) -> None:
        self._creds = creds
        self._trust = trust
        self.unit = unit or UnitKey.ephemeral()  # tests and benches: a key of their own
        self._secrets: dict[bytes, bytes] = {}
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

    def trust(self) -> Trust:
        """The cloud keys and scopes offline-signed keys are checked against now (``status``, ``doctor``)."""
        return self._trust()

    def view(self) -> StoreAccessView:
        return StoreAccessView(self._creds, self._doors.door_ids, self._tz(), trust=self._trust(), unit=self.unit,
                               secrets=self._secrets)

    def check(self, credential: Credential, door: int, at: datetime) -> Decision:
        """What would happen at ``at``: no record, no relay, no use taken (``access check``)."""
        return decide(credential, door, at, self.view())

    async def present(self, credential: Credential, doors: Sequence[int]) -> list[GateResult]:
        """A reader saw ``credential``: request each of its doors.

        A keypad entry's lock-out is kept in the record transaction of its last door, judged on the
        decisions of all its doors: one wrong PIN is one failure, however many doors the keypad serves.
        """
        results: list[GateResult] = []
        for index, door in enumerate(doors):
            keypad = isinstance(credential, PinEntry) and index == len(doors) - 1
            results.append(await self._guarded(credential, door, [r.decision for r in results] if keypad else None))
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
        """Decide, record and open one door for ``credential`` (no keypad lock-out: see :meth:`present`)."""
        return await self._guarded(credential, door_id, None)

    async def _guarded(self, credential: Credential, door_id: int, earlier: list[Decision] | None) -> GateResult:
        self._deciding += 1
        self._quiet.clear()
        try:
            return await self._request(credential, door_id, earlier)
        finally:
            self._deciding -= 1
            if not self._deciding:
                self._quiet.set()

    async def _request(self, credential: Credential, door_id: int, earlier: list[Decision] | None) -> GateResult:
        """The walk: the reads decide makes (through the view), the pure decision, one record transaction
        (entry, use, lock-out, cloud events), then the door, then the bus. No step goes back to an earlier one."""
        now = self._clock.now()
        view = self.view()
        decision = decide(credential, door_id, now, view)
        lockout = self._lockout_change(credential, [*earlier, decision], view, now) if earlier is not None else None
        try:
            decision, events = self._record(decision, now, lockout)
        except sqlite3.Error as exc:
            for hook in self._rollbacks:
                hook()
            if not (decision.granted and isinstance(credential, ExitButton)):
                log.critical("door %d: cannot record the decision (%s): not opening", door_id, exc)
                return GateResult(decision, opened=False, error=f"storage failure: {exc}", error_reason="storage")
            # Egress is life safety: an exit button opens even when the record cannot be written.
            log.critical("door %d: cannot record the exit request (%s): opening anyway", door_id, exc)
            events = self._events(decision, Recorded(0, False, None), stored=False)
        result = await self._open(decision, events)
        if lockout is not None:
            self._announce_if_locked(*lockout, now)
        return result

    async def _open(self, decision: Decision, events: list[Event]) -> GateResult:
        """A recorded decision reaches the door (when granted) and then the bus."""
        if not decision.granted:
            log.warning("door %d: %s refused (%s)", decision.door, decision.subject, decision.reason.value)
            self._publish(events)
            return GateResult(decision, opened=False)
        try:
            await self._doors.door(decision.door).open()
        except (LockError, LookupError) as exc:
            return self._lock_failed(decision, events, exc)
        log.log(25, "door %d opened for %s (%s)", decision.door, decision.subject, decision.credential)
        self._publish(events)
        return GateResult(decision, opened=True)

    def _record(self, decision: Decision, now: datetime,
                lockout: tuple[str, LockoutState, LockoutState] | None) -> tuple[Decision, list[Event]]:
        """Write the entry, take the use, keep the lock-out and store the events with the recorders: one
        transaction."""
        key = decision.key
        consume = None
        if decision.granted and key is not None and key.each_door_counts is not None:
            consume = (key.id, decision.door, key.each_door_counts)
        keep = (lockout[0], lockout[2]) if lockout is not None and lockout[1] != lockout[2] else None
        signed_until = int(key.end.timestamp()) if consume is not None and key is not None and key.signed_by else None
        events: list[Event] = []

        def record(recorded: Recorded) -> None:
            events[:] = self._events(decision, recorded, stored=bool(self._recorders))
            for event in events:
                for recorder in self._recorders:
                    recorder(event)

        counter = (decision.phone.public_point, decision.counter) \
            if decision.granted and decision.phone is not None and decision.counter is not None else None
        if self._creds.record_access(self._entry(decision, now), consume, record, keep, signed_until,
                                     counter) is None:
            # the last use went between decide and record: refuse, and record that
            decision = replace(decision, granted=False, reason=Reason.USES_EXHAUSTED, detail="no use left")
            if self._creds.record_access(self._entry(decision, now), then=record, lockout=keep) is None:
                raise AssertionError("a refusal takes no use, so it is always written")
        return decision, events

    @staticmethod
    def _entry(decision: Decision, now: datetime) -> DoorLogEntry:
        detail: dict[str, object] = {"detail": decision.detail} if decision.detail else {}
        if decision.phone is not None:
            detail.update(phone_key=decision.phone.id, mode=decision.mode)
        detail.update(decision.facts)
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
                self._creds.record_lock_fault(log_id, reason, detail, refund,
                                              signed=key is not None and key.signed_by is not None)
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

    def _events(self, decision: Decision, recorded: Recorded, stored: bool) -> list[Event]:
        """The decision as bus events: AccessDecided, and TempKeyUsed when a temp key opened (with the uses
        left from the count the record took: no second read)."""
        now = self._clock.now()
        events: list[Event] = [AccessDecided(
            now, decision.door, decision.credential, decision.subject, decision.granted, decision.reason.value,
            recorded.log_id, user_id=decision.user.id if decision.user else None,
            key_id=decision.key.id if decision.key else None, stored=stored, folded=recorded.folded,
            recipients=decision.key.recipients if decision.key else (), distance=_distance(decision))]
        key = decision.key
        if decision.granted and key is not None:
            left = None
            if key.each_door_counts is not None and recorded.uses is not None:
                left = key.each_door_counts - recorded.uses
            events.append(TempKeyUsed(now, key.id, key.name, decision.door, left, stored=stored))
        return events

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._bus.publish(event)

    # ------------------------------------------------------------ keypad lockout
    def _lockout_change(self, credential: Credential, decisions: list[Decision], view: StoreAccessView,
                        now: datetime) -> tuple[str, LockoutState, LockoutState] | None:
        """A keypad entry's lock-out (source, before, after), judged on the decisions of all its doors; pure
        but for the state itself, which decide has read already (unless the door was unknown)."""
        if not isinstance(credential, PinEntry) or any(d.reason is Reason.LOCKED_OUT for d in decisions):
            return None
        source = credential.source
        state = view.lockouts.get(source) or self._creds.lockout(source)
        if all(d.wrong_pin for d in decisions):
            return source, state, record_failure(state, now.timestamp(), self.lockout_policy)
        if state.failures or state.level:  # a valid PIN (even one refused for its schedule) ends the streak
            return source, state, record_success(state)
        return None

    def _announce_if_locked(self, source: str, before: LockoutState, after: LockoutState, now: datetime) -> None:
        stamp = now.timestamp()
        if after.is_locked(stamp) and not before.is_locked(stamp):
            self._announce_lockout(source, after.locked_until - stamp, after.level)

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

    def prune_signed(self) -> None:
        """Revocations and use counts of signed keys past their end go: at start, then every few hours (each
        revocation that arrives prunes too), so a unit that runs for months keeps only live ones."""
        try:
            revoked, uses = self._creds.prune_signed(self._clock.now())
        except sqlite3.Error as exc:
            log.error("signed keys: cannot prune the revocations (%s); trying again later", exc)
        else:
            if revoked or uses:
                log.info("signed keys: dropped %d revocations and %d use counts of keys past their end", revoked,
                         uses)
        self.timers.later(PRUNE_EVERY, self.prune_signed)

    def resume_lockouts(self) -> None:
        """After a restart, a lockout still running still ends with its alarm being cleared."""
        now = self._clock.now().timestamp()
        for source, state in self._creds.lockouts().items():
            if state.is_locked(now):
                self._schedule_unlock_alarm(source, state.locked_until - now)


def _distance(decision: Decision) -> float | None:
    """A face decision's distance (the one face fact that leaves the unit, with the user id)."""
    value = dict(decision.facts).get("distance")
    return float(value) if isinstance(value, int | float) else None


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
        self.gate.prune_signed()

    async def stop_feature(self) -> None:
        await self.gate.timers.cancel_all()  # started again (with the time left) by resume_lockouts

    def _on_exit(self, event: ExitButtonPressed) -> None:
        self.spawn(self.gate.request(ExitButton(event.door), event.door), f"exit-{event.door}")
