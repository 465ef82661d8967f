"""The daemon's captures: the store (files and rows), the camera's snapshots, and the automatic triggers.

No OpenCV here: a capture is a ``snapshot`` request to the camera process (``camera/capture_ops.py``),
which writes the JPEG into the temp file :meth:`CaptureStore.take_snapshot` names. Automatic captures
follow bus events (an access decision, a forced-open alarm) and never delay them: the door has opened
(or been refused) and its event is out before the capture is asked for; a :class:`CaptureTaken` event
then names the capture, its trigger, door and door-log entry, for the cloud and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.captures import Capture, CaptureSettings, CaptureStore
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import AccessDecided, AlarmChanged, CaptureTaken
from doorphoned.core.feature import Feature
from doorphoned.core.store import Store

log = logging.getLogger(__name__)

MAX_PENDING = 8  # automatic captures waiting at once; more are dropped (a burst must not queue pictures)


class CaptureFeature(Feature):
    name = "captures"

    def __init__(self, settings: CaptureSettings, state_dir: Path, store: Store, bus: EventBus, clock: Clock,
                 camera: Callable[[], Any]) -> None:
        super().__init__(clock)
        self.store = CaptureStore(state_dir, store, settings, clock)
        self.bus = bus
        self._camera = camera
        self.taken = 0
        self.failed = 0
        self.dropped = 0
        self._pending = 0

    async def start(self) -> None:
        swept = self.store.open()
        if swept["rows"] or swept["files"]:
            log.warning("captures: start-up sweep removed %d rows and %d files", swept["rows"], swept["files"])
        self.on_stop(self.bus.subscribe(AccessDecided, self._on_access, self.name))
        self.on_stop(self.bus.subscribe(AlarmChanged, self._on_alarm, self.name))

    async def stop_feature(self) -> None:
        pass

    async def take(self, trigger: str, door: int | None = None, log_id: int | None = None) -> Capture:
        """One capture now; :class:`CaptureError` (nothing kept) when refused or the camera cannot."""
        camera = self._camera()
        if camera is None:
            raise CaptureError("the camera is off (set camera.enabled = true)")
        taken = await self.store.take_snapshot(camera.request, trigger, door, log_id)
        self.taken += 1
        self.bus.publish(CaptureTaken(self.clock.now(), taken.id, taken.trigger, taken.door, taken.log_id,
                                      taken.size))
        return taken

    def automatic(self, trigger: str, door: int | None, log_id: int | None) -> None:
        """Take a capture in the background if ``trigger`` is switched on; a burst beyond
        :data:`MAX_PENDING` is dropped (counted), the store's retention bounds the rest."""
        if trigger not in self.store.settings.triggers:
            return
        if self._pending >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending += 1
        self.spawn(self._automatic(trigger, door, log_id), f"capture-{trigger}")

    async def _automatic(self, trigger: str, door: int | None, log_id: int | None) -> None:
        try:
            await self.take(trigger, door, log_id)
        except CaptureError as exc:
            self.failed += 1
            log.warning("captures: no %s capture: %s", trigger, exc)
        finally:
            self._pending -= 1

    async def capture_for(self, trigger: str, door: int | None) -> int | None:
        """``core.ports.Snapshots``: a capture now when ``trigger`` is switched on (a call that rings waits for
        its id); None when it is off or the camera could not (logged, counted like any automatic one)."""
        if trigger not in self.store.settings.triggers:
            return None
        try:
            return (await self.take(trigger, door, None)).id
        except CaptureError as exc:
            self.failed += 1
            log.warning("captures: no %s capture: %s", trigger, exc)
            return None

    def _on_access(self, event: AccessDecided) -> None:
        if event.folded or (event.granted and event.recipients):  # a delivery: the package room's capture
            return
        self.automatic("granted" if event.granted else "refused", event.door, event.log_id or None)

    def _on_alarm(self, event: AlarmChanged) -> None:
        if event.kind == "forced_open" and event.active:
            self.automatic("forced_open", event.door, None)

    def status(self) -> dict[str, Any]:
        return {**self.store.stats(), "taken": self.taken, "failed": self.failed, "dropped": self.dropped}
