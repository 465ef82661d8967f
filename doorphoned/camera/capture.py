"""One capture of the camera, gated so that an idle unit does almost no image work.

A door camera looks at the same empty porch nearly all the time. Every frame goes through a cheap change
detector on a small greyscale picture; full frames are decoded and published to the :class:`FrameHub` (where
QR decoding, motion, snapshots and the monitor stream take them) only while the capture is **active**:

- for ``active_seconds`` after the picture changed (someone walks up, a phone with a QR code is raised);
- for ``seconds`` after a ``wake`` op (the daemon saw a door open, a button, ...);
- while a consumer holds it active (``set-active``: the monitor stream while someone watches).

Two sources:

- :class:`MjpegCapture` (``http://`` MJPEG: hw-sim, most IP cameras): the parts are read by hand; identical
  JPEG bytes (a still scene re-sent) are "no change" without any decoding, other parts get a reduced
  greyscale decode (``cv2.IMREAD_REDUCED_GRAYSCALE_8``, 1/64 of the pixels, a fraction of a full decode) for
  the detector, and only active parts get a full colour decode.
- :class:`OpenCvCapture` (RTSP, a V4L2 device index or ``/dev/videoN``): OpenCV decodes every frame in full
  whatever we do, so idle saves the consumers' work (QR decoding, motion) but not the decode itself.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from doorphoned.camera.hub import FrameHub
from doorphoned.camera.mjpeg import MjpegReader, StreamEndedError, open_http
from doorphoned.core.frames import Frame

log = logging.getLogger(__name__)

SMALL = (80, 60)
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_S = 3.0


class Activity:
    """When full frames are wanted: until a deadline (changes, wake ops) or while any consumer holds it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0
        self._held: set[str] = set()

    def wake(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def hold(self, consumer: str, active: bool) -> None:
        with self._lock:
            (self._held.add if active else self._held.discard)(consumer)

    def active(self) -> bool:
        with self._lock:
            return bool(self._held) or self._clock() < self._until

    @property
    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)


class ChangeDetector:
    """Whether a small greyscale picture differs from the one before: more than ``fraction`` of its pixels
    moved by more than ``delta`` grey levels. A reduced decode averages 8x8 blocks, so sensor noise stays far
    below ``delta`` while a hand, a phone or a person changes whole blocks."""

    def __init__(self, fraction: float, delta: int = 16) -> None:
        self.fraction = fraction
        self.delta = delta
        self._last: np.ndarray | None = None

    def changed(self, small: np.ndarray) -> bool:
        last, self._last = self._last, small
        if last is None or last.shape != small.shape:
            return True
        moved = cv2.countNonZero(cv2.threshold(cv2.absdiff(small, last), self.delta, 255, cv2.THRESH_BINARY)[1])
        return moved > self.fraction * small.size


class Counters:
    """What the capture did, for the ``stats`` event."""

    def __init__(self) -> None:
        self.frames = 0  # parts/frames received from the camera
        self.reduced = 0  # reduced decodes for the detector
        self.published = 0  # full frames handed to the hub
        self.changes = 0


class Capture:
    """Base of the two sources: ``run()`` holds the camera until it fails (raises ``ConnectionError``).

    Must override: :meth:`run`. The shared part is :meth:`offer`: the detector, the activity gate and the
    hub."""

    kind = "base"

    def __init__(self, source: str, hub: FrameHub, activity: Activity, detector: ChangeDetector,
                 active_seconds: float) -> None:
        self.source = source
        self.hub = hub
        self.activity = activity
        self.detector = detector
        self.active_seconds = active_seconds
        self.counters = Counters()
        self.on_connected: Callable[[], None] = lambda: None
        self.fps = 15  # asked of a V4L2 device

    def run(self) -> None:
        raise NotImplementedError

    def offer(self, small: np.ndarray | None, full: Callable[[], np.ndarray | None], captured: float) -> None:
        """One frame: ``small`` for the detector (``None``: known unchanged), ``full`` decodes it when wanted."""
        if small is not None:
            self.counters.reduced += 1
            if self.detector.changed(small):
                self.counters.changes += 1
                self.activity.wake(self.active_seconds)
        if not self.activity.active():
            return
        image = full()
        if image is None:
            return
        self.counters.published += 1
        self.hub.publish(Frame(self.counters.frames, captured, image))


class MjpegCapture(Capture):
    kind = "mjpeg"

    def run(self) -> None:
        sock, stream, boundary = open_http(self.source, READ_TIMEOUT_S)
        try:
            reader = MjpegReader(stream, boundary)
            last = b""
            first = True
            while True:
                jpeg = reader.next_jpeg()
                captured = time.monotonic()
                self.counters.frames += 1
                same = jpeg == last
                small = None if same else cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
                if not same and small is None:
                    reader.skip("undecodable JPEG", f"{len(jpeg)} bytes")
                    continue
                last = jpeg
                if first:
                    first = False
                    self.on_connected()
                self.offer(small, functools.partial(_decode_colour, jpeg), captured)
        except OSError as exc:
            raise StreamEndedError(f"camera stream lost ({type(exc).__name__}: {exc})") from None
        finally:
            sock.close()


class OpenCvCapture(Capture):
    kind = "opencv"

    def run(self) -> None:
        capture = _open(self.source)
        if not capture.isOpened():
            raise ConnectionError("cannot open camera source")
        if _is_device(self.source):
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        try:
            self.on_connected()
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise StreamEndedError("camera stream lost (no frame)")
                captured = time.monotonic()
                self.counters.frames += 1
                small = cv2.resize(frame[:, :, 1], SMALL, interpolation=cv2.INTER_AREA)
                self.offer(small, functools.partial(_same, frame), captured)
        finally:
            capture.release()


def _decode_colour(jpeg: bytes) -> np.ndarray | None:
    image: np.ndarray | None = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return image


def _same(frame: np.ndarray) -> np.ndarray:
    return frame


def _open(source: str) -> Any:
    """A VideoCapture for a device index, ``/dev/videoN`` (V4L2) or a URL (FFmpeg, with timeouts)."""
    if _is_device(source):
        return cv2.VideoCapture(int(source) if source.isdigit() else source, cv2.CAP_V4L2)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
              int(READ_TIMEOUT_S * 1000)]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


def _is_device(source: str) -> bool:
    return source.isdigit() or source.startswith("/dev/video")


def capture_kind(source: str, setting: str) -> str:
    """``mjpeg`` or ``opencv`` for a source and the ``camera.capture`` setting (``auto`` picks by URL)."""
    if setting != "auto":
        return setting
    return "mjpeg" if source.startswith("http://") else "opencv"


def build_capture(source: str, setting: str, hub: FrameHub, activity: Activity, detector: ChangeDetector,
                  active_seconds: float) -> Capture:
    cls = MjpegCapture if capture_kind(source, setting) == "mjpeg" else OpenCvCapture
    return cls(source, hub, activity, detector, active_seconds)
