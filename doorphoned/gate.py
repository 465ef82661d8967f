"""The gate: where a credential becomes an opened door, in the order DESIGN §3 demands.

decide (pure) -> persist the record (fsynced) -> actuate the lock -> publish. A crash between
two steps can leave a record of a grant whose door never opened, never an opening with no record.
A lock driver failure is recorded as a ``lock_fault`` entry right after the grant.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from doorphoned.access import Credential, Decision, ExitButton, decide
from doorphoned.bus import EventBus
from doorphoned.clock import Clock
from doorphoned.events import AccessDecided, ExitButtonPressed, LockFault
from doorphoned.feature import Feature
from doorphoned.relay.driver import LockError
from doorphoned.relay.feature import DoorsFeature
from doorphoned.store import DoorLogEntry, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    opened: bool
    error: str = ""
    error_reason: str = ""


class _DoorsView:
    """The access core's read-only view of the doors."""

    def __init__(self, doors: DoorsFeature) -> None:
        self._doors = doors

    def door_ids(self) -> frozenset[int]:
        return frozenset(d.id for d in self._doors.config.doors)


class AccessGate:
    def __init__(self, store: Store, bus: EventBus, clock: Clock, doors: DoorsFeature) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self._doors = doors
        self._view = _DoorsView(doors)

    async def request(self, credential: Credential, door_id: int) -> GateResult:
        now = self._clock.now()
        decision = decide(credential, door_id, now, self._view)
        try:
            log_id = self._store.append_door_log(DoorLogEntry(
                ts=now, kind="access", door=door_id, credential=decision.credential, subject=decision.subject,
                granted=decision.granted, reason=decision.reason.value,
            ))
        except sqlite3.Error as exc:
            if not (decision.granted and isinstance(credential, ExitButton)):
                log.critical("door %d: cannot record the decision (%s): not opening", door_id, exc)
                return GateResult(decision, opened=False, error=f"storage failure: {exc}", error_reason="storage")
            # Egress is life safety: an exit button opens even when the record cannot be written.
            log.critical("door %d: cannot record the exit request (%s): opening anyway", door_id, exc)
            log_id = 0
        if not decision.granted:
            log.warning("door %d: %s refused (%s)", door_id, decision.subject, decision.reason.value)
            self._publish(decision, log_id)
            return GateResult(decision, opened=False)
        try:
            await self._doors.door(door_id).open()
        except (LockError, LookupError) as exc:
            return self._lock_failed(decision, log_id, exc)
        log.log(25, "door %d opened for %s", door_id, decision.subject)
        self._publish(decision, log_id)
        return GateResult(decision, opened=True)

    def _lock_failed(self, decision: Decision, log_id: int, exc: Exception) -> GateResult:
        reason = exc.reason if isinstance(exc, LockError) else "door_unavailable"
        detail = exc.detail if isinstance(exc, LockError) else str(exc)
        log.error("door %d: lock failed for %s: %s", decision.door, decision.subject, detail)
        self._publish(decision, log_id)
        self._bus.publish(LockFault(self._clock.now(), decision.door, reason, detail))
        return GateResult(decision, opened=False, error=detail, error_reason=reason)

    def _publish(self, decision: Decision, log_id: int) -> None:
        self._bus.publish(AccessDecided(self._clock.now(), decision.door, decision.credential, decision.subject,
                                        decision.granted, decision.reason.value, log_id))


class AccessFeature(Feature):
    """Turns exit-button presses into gate requests."""

    name = "access"

    def __init__(self, bus: EventBus, gate: AccessGate) -> None:
        super().__init__()
        self._bus = bus
        self.gate = gate

    async def start(self) -> None:
        self.on_stop(self._bus.subscribe(ExitButtonPressed, self._on_exit, self.name))

    async def stop_feature(self) -> None:
        pass

    def _on_exit(self, event: ExitButtonPressed) -> None:
        self.spawn(self.gate.request(ExitButton(event.door), event.door), f"exit-{event.door}")
