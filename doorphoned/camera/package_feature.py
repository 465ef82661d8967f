"""The package room: a delivery key (a temp key naming recipients) opened a door.

``access/`` knows nothing of cameras: the gate's :class:`AccessDecided` carries the key's recipients, and
this feature reacts to a granted one, after the door opened: a door-log entry of kind ``package``
(recipients, key, the access entry), a capture (trigger ``package``) when captures are on and the trigger is
switched on, then :class:`PackageDelivered` (``evt/package``) with the capture's id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from doorphoned.camera.capture_files import CaptureError
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import AccessDecided, PackageDelivered
from doorphoned.core.feature import Feature
from doorphoned.core.store import DoorLogEntry, Store

log = logging.getLogger(__name__)


class PackageFeature(Feature):
    name = "packages"

    def __init__(self, store: Store, bus: EventBus, clock: Clock, captures: Callable[[], Any]) -> None:
        super().__init__(clock)
        self.store = store
        self.bus = bus
        self._captures = captures
        self.deliveries = 0

    async def start(self) -> None:
        self.on_stop(self.bus.subscribe(AccessDecided, self._on_access, self.name))

    async def stop_feature(self) -> None:
        pass

    def _on_access(self, event: AccessDecided) -> None:
        if not (event.granted and event.recipients) or event.folded:
            return
        self.deliveries += 1
        log_id = self.store.append_door_log(DoorLogEntry(
            ts=self.clock.now(), kind="package", door=event.door, credential=event.credential, granted=True,
            reason="delivery", key_id=event.key_id,
            detail={"recipients": list(event.recipients), "access_log_id": event.log_id}))
        self.spawn(self._publish(event, log_id), "delivery")

    async def _publish(self, event: AccessDecided, log_id: int) -> None:
        capture_id: int | None = None
        captures = self._captures()
        if captures is not None and "package" in captures.store.settings.triggers:
            try:
                capture_id = (await captures.take("package", event.door, log_id)).id
            except CaptureError as exc:
                log.warning("package room: no capture: %s", exc)
        self.bus.publish(PackageDelivered(self.clock.now(), event.door, event.key_id, event.recipients, log_id,
                                          event.log_id, capture_id))

    def status(self) -> dict[str, Any]:
        return {"deliveries": self.deliveries}
