"""Motion alerts from the camera's frames: OpenCV on a small greyscale copy, against a background model.

Why it is built this way (issue 11): a door camera sees lighting change all day (clouds, dusk, the porch
light switching on) and sensor noise all night, and neither may wake anyone up. So each analysed frame is
first *matched to the background's brightness* (its mean and contrast mapped onto the background's: a
brightness ramp or a sudden step of the whole picture then leaves almost nothing), a change that still
covers most of the picture is taken as a lighting change (the background is re-learnt, no alert), and what
remains must be one *connected* region of at least ``min_area`` of the frame: scattered noise pixels never
form one. Zones are rectangles in normalised 0..1 coordinates, so a resolution change does not move them.

Time comes from an injected :class:`~doorphoned.core.clock.Clock` (cooldown on its monotonic time, the
arming schedule on its wall time in the site's zone), so tests choose any instant, DST days included.

The detector is plain synchronous code fed one :class:`~doorphoned.core.frames.Frame` at a time;
:class:`MotionWatch` is the consumer thread that feeds it from a frame source (the camera's hub) and hands
alerts to a callback. The host (camera process or daemon) maps config to :class:`MotionSettings` with
:meth:`MotionSettings.from_dict`, which refuses anything malformed with a message naming the key.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cv2
import numpy as np

from doorphoned.core.clock import Clock
from doorphoned.core.frames import Frame, FrameSource, FrameSubscription
from doorphoned.core.schedule import ScheduleError, WeeklyWindow, in_any_window

log = logging.getLogger(__name__)

MAX_ZONES = 16
MAX_WINDOWS = 32
MAX_TEXT = 64
ZONE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MAX_FRAME_SIDE = 8192  # a frame larger than this is not a camera frame: refused, not analysed
LIGHTING_FRACTION = 0.5  # changed share of the picture above which a change is lighting, not an object
CONTRAST_FLOOR = 4.0  # grey levels: below this a frame is "flat" and its contrast is not stretched
GAIN_LIMITS = (0.25, 4.0)  # how far a frame's contrast may be scaled to match the background


class MotionSettingsError(ValueError):
    """Motion settings that cannot be used; the message names the key and why."""


class MotionFrameError(ValueError):
    """A frame that is not a picture the detector can analyse (wrong type, shape or size)."""


@dataclass(frozen=True)
class Zone:
    """A rectangle of the picture, corners in 0..1 of its width and height (x0 < x1, y0 < y1)."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not ZONE_NAME.match(self.name):
            raise MotionSettingsError(f"zone name must be 1-32 of A-Z a-z 0-9 _ . -, got {_show(self.name)}")
        corners = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(c, float) and math.isfinite(c) and 0.0 <= c <= 1.0 for c in corners):
            raise MotionSettingsError(f"zone {self.name}: corners must be finite numbers within 0..1")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise MotionSettingsError(f"zone {self.name}: rect must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The zone at an analysed size: (x0, y0, x1, y1) in pixels, at least one pixel each way."""
        x0, y0 = int(self.x0 * width), int(self.y0 * height)
        x1 = max(x0 + 1, math.ceil(self.x1 * width))
        y1 = max(y0 + 1, math.ceil(self.y1 * height))
        return x0, y0, min(x1, width), min(y1, height)

    @classmethod
    def from_value(cls, value: object, index: int) -> Zone:
        """One zone from config/MQTT: ``{name = "path", rect = [x0, y0, x1, y1]}``."""
        where = f"zones[{index}]"
        if not isinstance(value, Mapping):
            raise MotionSettingsError(f"{where} must be a table with name and rect")
        unknown = set(value) - {"name", "rect"}
        if unknown:
            raise MotionSettingsError(f"{where}: unknown key {_show(sorted(map(str, unknown))[0])}")
        name, rect = value.get("name", f"zone{index + 1}"), value.get("rect")
        if not isinstance(name, str):
            raise MotionSettingsError(f"{where}.name must be a string")
        if not isinstance(rect, list | tuple) or len(rect) != 4:
            raise MotionSettingsError(f"{where}.rect must be a list of four numbers [x0, y0, x1, y1]")
        corners = [_number(f"{where}.rect", c) for c in rect]
        return cls(name, *corners)


@dataclass(frozen=True)
class MotionSettings:
    """How motion is detected; :meth:`from_dict` reads it from config or a cloud push.

    ``min_area`` is a fraction of the whole picture that one connected moving region must cover;
    ``sensitivity`` 1..100 sets how different (after brightness matching) a pixel must be to count as
    changed (100: 6 grey levels, 1: 80); ``cooldown_s`` is the least time between two alerts while motion
    continues; ``schedule`` holds weekly windows (``mon-fri 08:00-18:00``) in ``timezone`` when motion is
    armed (none: always armed); ``zones`` empty means the whole picture. ``confirm_frames`` consecutive
    analysed frames must show the region before an alert (one frame of glitch never alerts); at most
    ``max_fps`` frames a second are analysed (the rest are skipped: an idle door costs little).
    """

    enabled: bool = True
    sensitivity: int = 50
    min_area: float = 0.01
    cooldown_s: float = 30.0
    zones: tuple[Zone, ...] = ()
    schedule: tuple[str, ...] = ()
    timezone: str = "UTC"
    analysis_width: int = 160
    learning_rate: float = 0.05
    confirm_frames: int = 2
    max_fps: float = 8.0
    windows: tuple[WeeklyWindow, ...] = field(default=(), init=False, repr=False, compare=False)
    tz: ZoneInfo = field(default=ZoneInfo("UTC"), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_range("sensitivity", self.sensitivity, 1, 100, int)
        _check_range("min_area", self.min_area, 0.0001, 1.0, float)
        _check_range("cooldown_s", self.cooldown_s, 0.0, 86400.0, float)
        _check_range("analysis_width", self.analysis_width, 32, 640, int)
        _check_range("learning_rate", self.learning_rate, 0.001, 1.0, float)
        _check_range("confirm_frames", self.confirm_frames, 1, 30, int)
        _check_range("max_fps", self.max_fps, 0.5, 60.0, float)
        if not isinstance(self.enabled, bool):
            raise MotionSettingsError("enabled must be true or false")
        if len(self.zones) > MAX_ZONES or not all(isinstance(z, Zone) for z in self.zones):
            raise MotionSettingsError(f"zones: at most {MAX_ZONES} zones")
        if len({z.name for z in self.zones}) != len(self.zones):
            raise MotionSettingsError("zones: two zones have the same name")
        object.__setattr__(self, "windows", _windows(self.schedule))
        object.__setattr__(self, "tz", _zone(self.timezone))

    @property
    def threshold(self) -> float:
        """Grey levels (of 255) a brightness-matched pixel must differ by to count as changed."""
        return 6.0 + (100 - self.sensitivity) * 74.0 / 99.0

    @classmethod
    def from_dict(cls, data: object) -> MotionSettings:
        """Settings from untrusted config/MQTT data; unknown keys and wrong types are refused by name."""
        if not isinstance(data, Mapping):
            raise MotionSettingsError("motion settings must be a table")
        known = {"enabled", "sensitivity", "min_area", "cooldown_s", "zones", "schedule", "timezone",
                 "analysis_width", "learning_rate", "confirm_frames", "max_fps"}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise MotionSettingsError(f"unknown motion setting {_show(unknown[0])}")
        values: dict[str, Any] = {}
        for key in ("sensitivity", "analysis_width", "confirm_frames"):
            if key in data:
                values[key] = _integer(key, data[key])
        for key in ("min_area", "cooldown_s", "learning_rate", "max_fps"):
            if key in data:
                values[key] = _number(key, data[key])
        for key in ("enabled",):
            if key in data:
                values[key] = data[key]
        for key in ("timezone",):
            if key in data:
                values[key] = _text(key, data[key])
        if "schedule" in data:
            values["schedule"] = _text_list("schedule", data["schedule"], MAX_WINDOWS)
        if "zones" in data:
            zones = data["zones"]
            if not isinstance(zones, list | tuple) or len(zones) > MAX_ZONES:
                raise MotionSettingsError(f"zones must be a list of at most {MAX_ZONES} zones")
            values["zones"] = tuple(Zone.from_value(z, i) for i, z in enumerate(zones))
        return cls(**values)


@dataclass(frozen=True)
class MotionAlert:
    """One alert: when (wall clock), which frame, how much of the picture moved, where, in which zone.

    ``area`` is the moving region's share of the whole picture; ``bbox`` its box as (x0, y0, x1, y1) in
    0..1; ``zone`` the zone it was seen in (None when no zones are configured).
    """

    at: datetime
    seq: int
    frame_monotonic: float
    area: float
    bbox: tuple[float, float, float, float]
    zone: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"ts": self.at.isoformat(), "seq": self.seq, "area": round(self.area, 4),
                "bbox": [round(v, 4) for v in self.bbox], "zone": self.zone}


@dataclass(frozen=True)
class Region:
    """The largest connected moving region of one analysed frame."""

    area: float
    bbox: tuple[float, float, float, float]
    zone: str | None


class MotionDetector:
    """Frames in, at most one :class:`MotionAlert` per cooldown out. Not thread-safe: one feeder."""

    def __init__(self, settings: MotionSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.analysed = 0
        self.lighting_changes = 0
        self._model: _Background | None = None
        self._shape: tuple[int, int] | None = None
        self._masks: list[tuple[str | None, np.ndarray]] = []
        self._streak = 0
        self._last_alert: float | None = None
        self._last_frame: float | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def armed(self) -> bool:
        """Enabled and inside the arming schedule (no schedule: always) at the clock's instant."""
        s = self.settings
        return s.enabled and in_any_window(s.windows, self.clock.now(), s.tz)

    def feed(self, frame: Frame) -> MotionAlert | None:
        """Analyse one frame; an alert when a region moved, the detector is armed and out of cooldown.

        Disarmed, nothing is analysed (an idle unit spends nothing here) and the background is dropped,
        so re-arming learns the scene afresh instead of alerting on what changed meanwhile.
        """
        if not self.armed():
            self._model, self._streak = None, 0
            return None
        image = self._check(frame.image)
        if self._skip(frame):
            return None
        grey = self._prepare(image)
        region = self._analyse(grey)
        self.analysed += 1
        self._streak = self._streak + 1 if region is not None else 0
        if region is None or self._streak < self.settings.confirm_frames or self._cooling():
            return None
        self._last_alert = self.clock.monotonic()
        return MotionAlert(self.clock.now(), frame.seq, frame.monotonic, region.area, region.bbox, region.zone)

    def _skip(self, frame: Frame) -> bool:
        """True for a frame within ``1 / max_fps`` (glass time) of the last one analysed; 10 % of slack,
        so that a camera's jitter does not make it skip two frames where it should skip one."""
        last = self._last_frame
        if last is not None and 0 <= frame.monotonic - last < 0.9 / self.settings.max_fps:
            return True
        self._last_frame = frame.monotonic
        return False

    def _cooling(self) -> bool:
        last = self._last_alert
        return last is not None and self.clock.monotonic() - last < self.settings.cooldown_s

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """The frame small, grey and slightly blurred (noise averages out when it shrinks)."""
        height, width = image.shape[:2]
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.shape[2] == 3 \
            else image[:, :, 0]
        small_w = min(self.settings.analysis_width, width)
        small_h = max(8, round(height * small_w / width))
        small = cv2.resize(grey, (small_w, small_h), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)

    @staticmethod
    def _check(image: Any) -> np.ndarray:
        """The frame's picture, or :class:`MotionFrameError` when it is not one (checked on every frame,
        skipped or not, so a broken camera shows at once)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise MotionFrameError("a frame must be a uint8 numpy array")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise MotionFrameError(f"a frame must be HxW grey or HxWx3 BGR, got shape {image.shape}")
        height, width = image.shape[:2]
        if not (8 <= width <= MAX_FRAME_SIDE and 8 <= height <= MAX_FRAME_SIDE):
            raise MotionFrameError(f"frame size {width}x{height} is outside 8..{MAX_FRAME_SIDE}")
        return image

    def _analyse(self, grey: np.ndarray) -> Region | None:
        if self._model is None or grey.shape != self._shape:
            self._start(grey)
            return None
        model = self._model
        matched = _match_brightness(grey, model.reference, self.settings.threshold)
        changed = model.changed(matched, self.settings.threshold)
        if np.count_nonzero(changed) > LIGHTING_FRACTION * changed.size:
            self.lighting_changes += 1  # the whole picture changed: a light, not a visitor
            self._start(grey)
            return None
        model.learn(grey)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, self._kernel)
        return self._largest_region(changed)

    def _start(self, grey: np.ndarray) -> None:
        self._shape = grey.shape
        self._model = _Background(self.settings, grey)
        self._masks = self._zone_masks(grey.shape)
        self._streak = 0

    def _zone_masks(self, shape: tuple[int, ...]) -> list[tuple[str | None, np.ndarray]]:
        height, width = shape[:2]
        if not self.settings.zones:
            return [(None, np.full((height, width), 255, np.uint8))]
        masks: list[tuple[str | None, np.ndarray]] = []
        for zone in self.settings.zones:
            mask = np.zeros((height, width), np.uint8)
            x0, y0, x1, y1 = zone.pixels(width, height)
            mask[y0:y1, x0:x1] = 255
            masks.append((zone.name, mask))
        return masks

    def _largest_region(self, changed: np.ndarray) -> Region | None:
        """The biggest connected changed region inside a zone, if it reaches ``min_area``."""
        height, width = changed.shape
        total = float(height * width)
        best: Region | None = None
        for name, mask in self._masks:
            inside = cv2.bitwise_and(changed, mask)
            count, _labels, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=8)
            if count < 2:
                continue
            index = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            x, y, w, h, area = (int(v) for v in stats[index])
            share = area / total
            if share >= self.settings.min_area and (best is None or share > best.area):
                best = Region(share, (x / width, y / height, (x + w) / width, (y + h) / height), name)
        return best


class _Background:
    """The scene without visitors: a running average of the (small, grey) frames.

    Chosen over OpenCV's MOG2 by measurement on the test scenes (bench/motion_capture.py): fed the same
    brightness-matched frames with the same min-area rule, MOG2 alerted alike (about as many frames of the
    crossing, none of the lighting or noise scenes) at about 1.6x the cost per frame; and brightness
    matching needs a background picture to match against, which the running average is.
    """

    def __init__(self, settings: MotionSettings, grey: np.ndarray) -> None:
        self.rate = settings.learning_rate
        self.reference = grey.copy()

    def changed(self, matched: np.ndarray, threshold: float) -> np.ndarray:
        """255 where a brightness-matched pixel differs from the background, else 0."""
        diff = cv2.absdiff(matched, self.reference)
        return np.where(diff > threshold, np.uint8(255), np.uint8(0)).astype(np.uint8)

    def learn(self, grey: np.ndarray) -> None:
        """Learn the frame as the camera saw it, not as matched: the match maps each frame's contrast onto
        the background's, so a background learnt from matched frames would only ever lose contrast (sensor
        noise and every passing visitor shrank it, until after a few visitors nothing stood out)."""
        cv2.accumulateWeighted(grey, self.reference, self.rate)


def _match_brightness(grey: np.ndarray, reference: np.ndarray, threshold: float) -> np.ndarray:
    """``grey`` with its brightness and contrast mapped onto ``reference``'s: a global brightness or gain
    change (a ramp, a cloud, lights switched on) cancels out, a local change (someone at the door) stays.

    Two passes: the first maps the whole picture's mean and spread; the second maps them again measured
    only on the pixels the first found unchanged, so a visitor (a dark coat raises the picture's spread)
    does not skew the match of everything else.
    """
    first = _mapped(grey, reference, None)
    unchanged = (cv2.absdiff(first, reference) <= threshold).astype(np.uint8)
    if np.count_nonzero(unchanged) < unchanged.size // 10:
        return first
    return _mapped(grey, reference, unchanged)


def _mapped(grey: np.ndarray, reference: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    mean, std = cv2.meanStdDev(grey, mask=mask)
    ref_mean, ref_std = cv2.meanStdDev(reference, mask=mask)
    m, s, rm, rs = float(mean[0, 0]), float(std[0, 0]), float(ref_mean[0, 0]), float(ref_std[0, 0])
    gain = 1.0 if s < CONTRAST_FLOOR or rs < CONTRAST_FLOOR else min(max(rs / s, GAIN_LIMITS[0]), GAIN_LIMITS[1])
    return ((grey - m) * gain + rm).astype(np.float32)


class MotionWatch:
    """The motion consumer thread: newest frame from ``source`` into ``detector``, alerts to ``on_motion``.

    It reads the frame source's one-frame mailbox, so a slow analysis drops frames instead of slowing the
    camera. ``on_motion`` runs in this thread (a host on asyncio hands it to its loop with
    ``call_soon_threadsafe``); an exception there, or a frame the detector refuses, is logged and the
    watch goes on. ``stop()`` is idempotent. New settings (config reload, a cloud push): assign a new
    detector to ``detector``; the thread picks it up at the next frame (one attribute, swapped whole).
    """

    def __init__(self, source: FrameSource, detector: MotionDetector,
                 on_motion: Callable[[MotionAlert], object], name: str = "motion") -> None:
        self.source = source
        self.detector = detector
        self.on_motion = on_motion
        self.name = name
        self.alerts = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: FrameSubscription | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        subscription = self.source.subscribe(self.name)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(subscription,), name=f"{self.name}-watch",
                                        daemon=True)
        self._subscription = subscription
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        subscription, self._subscription = self._subscription, None
        if thread is None:
            return
        self._stop.set()
        if subscription is not None:
            subscription.close()
        thread.join(10)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, subscription: FrameSubscription) -> None:
        while not self._stop.is_set():
            frame = subscription.get(0.5)
            if frame is not None:
                self._one(frame)

    def _one(self, frame: Frame) -> None:
        detector = self.detector
        try:
            alert = detector.feed(frame)
        except MotionFrameError as exc:
            self._error("frame %d refused: %s", frame.seq, exc)
            return
        except Exception as exc:  # an OpenCV error on a frame nobody foresaw: the watch must not die of it
            self._error("frame %d could not be analysed: %r", frame.seq, exc)
            return
        if alert is None:
            return
        self.alerts += 1
        try:
            self.on_motion(alert)
        except Exception:
            self.errors += 1
            log.exception("motion: the alert handler failed (alert %s)", alert.as_dict())

    def _error(self, message: str, *args: object) -> None:
        if self.errors == 0 or self.errors % 1000 == 0:  # a broken camera would otherwise flood the log
            log.warning("motion: " + message, *args)
        self.errors += 1


def _show(value: object) -> str:
    """A value from outside as it may appear in a message: repr (no raw controls), cut short."""
    text = repr(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MotionSettingsError(f"{key} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MotionSettingsError(f"{key} must be a finite number, got {_show(value)}")
    return number


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MotionSettingsError(f"{key} must be an integer, got {type(value).__name__}")
    return value


def _text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise MotionSettingsError(f"{key} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise MotionSettingsError(f"{key} is longer than {MAX_TEXT} characters")
    return value


def _text_list(key: str, value: object, most: int) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > most:
        raise MotionSettingsError(f"{key} must be a list of at most {most} strings")
    return tuple(_text(f"{key}[{i}]", v) for i, v in enumerate(value))


def _check_range(key: str, value: object, low: float, high: float, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise MotionSettingsError(f"{key} must be {'an integer' if kind is int else 'a number'}")
    # compared as given: float() of a 400-digit integer from a JSON payload raises OverflowError
    if not (low <= value <= high and (isinstance(value, int) or math.isfinite(value))):
        raise MotionSettingsError(f"{key} must be within {low:g}..{high:g}, got {_show(value)}")


def _windows(schedule: tuple[str, ...]) -> tuple[WeeklyWindow, ...]:
    if not isinstance(schedule, tuple) or len(schedule) > MAX_WINDOWS:
        raise MotionSettingsError(f"schedule: at most {MAX_WINDOWS} windows")
    try:
        return tuple(WeeklyWindow.parse(_text("schedule", text)) for text in schedule)
    except ScheduleError as exc:
        raise MotionSettingsError(f"schedule: {exc}") from exc


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > MAX_TEXT or "\x00" in name:
        raise MotionSettingsError(f"timezone must be an IANA zone name such as Europe/Berlin, got {_show(name)}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise MotionSettingsError(f"unknown timezone {_show(name)}") from exc
