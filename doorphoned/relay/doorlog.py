"""The door log feature: door status, alarms and lock faults, recorded as they are published.

Access decisions are written by the gate itself (before the door moves); everything else that
belongs in ``log doors`` arrives here over the bus. The log is bounded: ``daemon.door_log_max`` ordinary
entries and, separately, ``daemon.door_log_alarms_max`` alarms and lock faults, so ordinary traffic can
never push an alarm out. Repeated refusals are folded into one entry with a count (``Store.collapse_refusal``).
"""

from __future__ import annotations

import logging

from doorphoned.core.bus import EventBus
from doorphoned.core.events import AccessDecided, AlarmChanged, DoorStatusChanged, LockFault
from doorphoned.core.feature import Feature
from doorphoned.core.store import DoorLogEntry, Store

log = logging.getLogger(__name__)

PRUNE_EVERY = 1000


class DoorLogFeature(Feature):
    """Records door status, alarms and lock faults in the door log as they are published."""

    name = "door_log"

    def __init__(self, bus: EventBus, store: Store, keep: int, keep_alarms: int | None = None) -> None:
        super().__init__()
        self._bus = bus
        self._store = store
        self._keep = keep
        self._keep_alarms = keep if keep_alarms is None else keep_alarms
        self._since_prune = 0

    async def start(self) -> None:
        self.on_stop(self._bus.subscribe(DoorStatusChanged, self._on_status, self.name))
        self.on_stop(self._bus.subscribe(AlarmChanged, self._on_alarm, self.name))
        self.on_stop(self._bus.subscribe(LockFault, self._on_fault, self.name))
        self.on_stop(self._bus.subscribe(AccessDecided, self._count, self.name))
        self._prune()

    async def stop_feature(self) -> None:
        pass

    def _on_status(self, event: DoorStatusChanged) -> None:
        self._append(DoorLogEntry(ts=event.ts, kind="door_status", door=event.door,
                                  reason="open" if event.is_open else "closed"))

    def _on_alarm(self, event: AlarmChanged) -> None:
        level = logging.WARNING if event.active else logging.INFO
        where = f"door {event.door}" if event.door is not None else "unit"
        log.log(level, "alarm %s %s on %s: %s", event.kind, "raised" if event.active else "cleared", where,
                event.detail)
        self._append(DoorLogEntry(ts=event.ts, kind="alarm", door=event.door, reason=event.kind,
                                  detail={"active": event.active, "detail": event.detail}))

    def _on_fault(self, event: LockFault) -> None:
        self._append(DoorLogEntry(ts=event.ts, kind="lock_fault", door=event.door, granted=False,
                                  reason=event.reason, detail={"detail": event.detail}))

    def _count(self, _: AccessDecided) -> None:
        self._tick()

    def _append(self, entry: DoorLogEntry) -> None:
        self._store.append_door_log(entry)
        self._tick()

    def _tick(self) -> None:
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._prune()

    def _prune(self) -> None:
        self._since_prune = 0
        removed = self._store.prune_door_log(self._keep, self._keep_alarms)
        if removed:
            log.info("door log: pruned %d oldest entries (keeping %d, and %d alarms)", removed, self._keep,
                     self._keep_alarms)
