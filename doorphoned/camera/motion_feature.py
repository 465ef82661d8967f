"""Motion alerts in the daemon: the camera process runs the detector (``capture_ops`` ``motion`` op, sent
again each time a camera process comes up); each alert becomes a door-log entry of kind ``motion``, a
capture when the ``motion`` trigger is on, and a :class:`MotionDetected` bus event (``evt/motion``, the
Home Assistant sensor) that carries the capture's id. The detector's cooldown bounds the alerts: a moving
object alerts once per ``cooldown_s``, whatever reaches the daemon from the process is checked first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.motion_config import MotionConfig
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import CameraStateChanged, MotionDetected
from doorphoned.core.feature import Feature
from doorphoned.core.store import DoorLogEntry, Store

log = logging.getLogger(__name__)


class MotionFeature(Feature):
    name = "motion"

    def __init__(self, config: MotionConfig, timezone: str, store: Store, bus: EventBus, clock: Clock,
                 camera: Callable[[], Any], captures: Callable[[], Any]) -> None:
        super().__init__(clock)
        self.config = config
        self.timezone = timezone
        self.store = store
        self.bus = bus
        self._camera = camera
        self._captures = captures
        self.alerts = 0
        self.armed: bool | None = None
        self.error = ""

    async def start(self) -> None:
        camera = self._camera()
        if camera is None:
            self.error = "the camera is off"
            return
        camera.on_event("motion", self._on_motion)
        self.on_stop(self.bus.subscribe(CameraStateChanged, self._on_camera, self.name))
        if camera.state == "ok":
            self.spawn(self._arm(), "arm")

    async def stop_feature(self) -> None:
        pass

    def _on_camera(self, event: CameraStateChanged) -> None:
        if event.up:
            self.spawn(self._arm(), "arm")

    async def _arm(self) -> None:
        """Send the settings to the camera process (a new process knows nothing of them)."""
        camera = self._camera()
        try:
            reply = await camera.request("motion", settings=self.config.to_dict(self.timezone))
        except Exception as exc:  # CameraError: refused or no process; shown in status, retried on next up
            self.error = str(exc)[:200]
            log.warning("motion: the camera did not take the settings: %s", self.error)
            return
        self.armed, self.error = reply.get("armed") is True, ""

    def _on_motion(self, message: dict[str, Any]) -> None:
        area, zone, age = message.get("area"), message.get("zone"), message.get("age_ms")
        if isinstance(area, bool) or not isinstance(area, int | float) or not (math.isfinite(area) and 0 <= area <= 1):
            log.warning("motion: an alert without a valid area ignored")
            return
        if zone is not None and (not isinstance(zone, str) or not 0 < len(zone) <= 32 or not zone.isprintable()):
            zone = None
        age_ms = float(age) if isinstance(age, int | float) and not isinstance(age, bool) and math.isfinite(age) \
            and 0 <= age < 1e9 else None
        self.alerts += 1
        log_id = self.store.append_door_log(DoorLogEntry(
            ts=self.clock.now(), kind="motion", door=self.config.door, reason="motion",
            detail={"area": round(float(area), 4), "zone": zone}))
        self.spawn(self._publish(log_id, zone, float(area), age_ms), "alert")

    async def _publish(self, log_id: int, zone: str | None, area: float, age_ms: float | None) -> None:
        """The capture first (the alert's picture is what the owner wants to see), then the event."""
        capture_id: int | None = None
        captures = self._captures()
        if captures is not None and "motion" in captures.store.settings.triggers:
            try:
                capture_id = (await captures.take("motion", self.config.door, log_id)).id
            except CaptureError as exc:
                log.warning("motion: no capture: %s", exc)
        self.bus.publish(MotionDetected(self.clock.now(), self.config.door, log_id, zone, round(area, 4),
                                        capture_id, age_ms))

    def status(self) -> dict[str, Any]:
        return {"alerts": self.alerts, "armed": self.armed, "motion_error": self.error}
