"""The ``[motion]`` section: motion alerts from the camera (zones as ``[[motion.zones]]`` tables).

The values become a :class:`~doorphoned.camera.motion.MotionSettings` (in the camera process, which runs
the detector) through :meth:`MotionSettings.from_dict`, whose checks run here too at load time, so a bad
zone or schedule stops the start with its key and line instead of failing later in the camera process.
The arming schedule is read in the site's time zone (``site.timezone``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from doorphoned.core.config import ConfigError, Source, setting
from doorphoned.core.schedule import ScheduleError, WeeklyWindow

ZONE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")  # as camera/motion.py (which the daemon must not import)
MAX_ZONES = 16


@dataclass(frozen=True)
class MotionZoneConfig:
    name: str = setting("zone", doc="Name of the zone (1-32 of A-Z a-z 0-9 _ . -), sent with each alert.")
    rect: tuple[float, ...] = setting([0.0, 0.0, 1.0, 1.0], doc="The zone as `[x0, y0, x1, y1]`, corners in 0..1 "
                                      "of the picture's width and height.")


@dataclass(frozen=True)
class MotionConfig:
    enabled: bool = setting(False, doc="Motion alerts from the camera (needs `camera.enabled`): `evt/motion`, a "
                            "door-log entry of kind `motion`, a capture when `captures.triggers` has `motion`.")
    door: int = setting(1, doc="The door motion alerts are logged for.", min=1, max=16)
    sensitivity: int = setting(50, doc="1-100: how different a pixel must be (after brightness matching) to "
                               "count as moving (100: 6 grey levels, 1: 80).", min=1, max=100)
    min_area: float = setting(0.01, doc="Share of the picture one connected moving region must cover.",
                              min=0.0001, max=1.0)
    cooldown_s: float = setting(30.0, doc="Least seconds between two alerts while motion goes on.", min=0,
                                max=86400)
    confirm_frames: int = setting(2, doc="Consecutive analysed frames that must show the region before an "
                                  "alert.", min=1, max=30)
    max_fps: float = setting(8.0, doc="Frames a second analysed at most while the camera is active.", min=0.5,
                             max=60)
    schedule: tuple[str, ...] = setting([], doc="Weekly windows when motion is armed (`mon-fri 18:00-07:00`), in "
                                        "the site's time zone; empty = always armed.")
    zones: tuple[MotionZoneConfig, ...] = setting([], doc="`[[motion.zones]]` rectangles watched; none = the whole "
                                                  "picture.")

    def to_dict(self, timezone: str) -> dict[str, Any]:
        """The camera process's ``motion`` op settings (``MotionSettings.from_dict``)."""
        return {"enabled": self.enabled, "sensitivity": self.sensitivity, "min_area": self.min_area,
                "cooldown_s": self.cooldown_s, "confirm_frames": self.confirm_frames, "max_fps": self.max_fps,
                "schedule": list(self.schedule), "timezone": timezone,
                "zones": [{"name": z.name, "rect": list(z.rect)} for z in self.zones]}

    def validate(self, source: Source) -> None:
        """The checks ``MotionSettings`` makes on zones and the schedule, here without OpenCV (``motion.py``
        loads it, and the daemon never does): a bad one stops the start with its key."""
        for i, zone in enumerate(self.zones):
            key = f"motion.zones[{i}]"
            if not ZONE_NAME.match(zone.name):
                raise ConfigError(f"{key}.name", "must be 1-32 of A-Z a-z 0-9 _ . -", source.where(key))
            rect = zone.rect
            if len(rect) != 4 or not all(0.0 <= c <= 1.0 for c in rect) or not (rect[0] < rect[2]
                                                                                  and rect[1] < rect[3]):
                raise ConfigError(f"{key}.rect", "must be [x0, y0, x1, y1] within 0..1 with x0 < x1 and y0 < y1",
                                  source.where(key))
        if len({z.name for z in self.zones}) != len(self.zones) or len(self.zones) > MAX_ZONES:
            raise ConfigError("motion.zones", f"at most {MAX_ZONES} zones, each with its own name",
                              source.where("motion.zones"))
        for text in self.schedule:
            try:
                WeeklyWindow.parse(text)
            except ScheduleError as exc:
                raise ConfigError("motion.schedule", str(exc), source.where("motion.schedule")) from None
