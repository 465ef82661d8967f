"""The camera as a QR reader: OpenCV capture from a URL or device, decoded on the capture thread.

Capture and decoding are blocking C calls, so they run on one thread per session; only decoded
payloads cross to the loop. A payload is acted on once per ``qr_cooldown`` (a code held in front
of the lens is in every frame). A stream that cannot be opened, or stops delivering frames, ends
the session: the reader shows ``fault`` and retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2

from doorphoned.access import QrScan
from doorphoned.clock import Clock
from doorphoned.config import CameraConfig
from doorphoned.gate import AccessGate
from doorphoned.readers.base import ReaderFeature
from doorphoned.readers.qr import QrDecoder
from doorphoned.urls import redact_url

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 3000
CONNECTED = object()


def open_capture(source: str) -> Any:
    """A VideoCapture for a URL (FFmpeg, with open/read timeouts) or a device index."""
    if source.isdigit():
        return cv2.VideoCapture(int(source))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


class LatestFrame:
    """A one-frame mailbox: a slow consumer gets the newest frame, never a growing backlog."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Any = None

    def put(self, frame: Any) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify()

    def take(self, timeout: float) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None, timeout)
            frame, self._frame = self._frame, None
            return frame

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class CameraReader(ReaderFeature):
    name = "camera"

    def __init__(self, config: CameraConfig, gate: AccessGate, clock: Clock) -> None:
        super().__init__(gate, config.qr_doors, clock)
        self.config = config
        self._recent: dict[str, float] = {}
        self.frames = 0
        self.decode_ms = 0.0

    async def run_session(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        latest = LatestFrame()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        threads = [threading.Thread(target=self._capture, args=(put, latest, stop), name="camera", daemon=True),
                   threading.Thread(target=self._decode, args=(put, latest, stop), name="qr", daemon=True)]
        for thread in threads:
            thread.start()
        try:
            while True:
                item = await queue.get()
                if item is CONNECTED:
                    self.connected()
                elif isinstance(item, Exception):
                    raise item
                else:
                    await self._payload(item)
        finally:
            stop.set()
            latest.wake()
            for thread in threads:
                await asyncio.to_thread(thread.join, READ_TIMEOUT_MS / 1000 + 1)

    def _capture(self, put: Callable[[Any], None], latest: LatestFrame, stop: threading.Event) -> None:
        """Read frames as fast as the camera sends them, keeping only the newest (no backlog)."""
        capture = open_capture(self.config.source)
        try:
            if not capture.isOpened():
                put(ConnectionError(f"cannot open camera source {redact_url(self.config.source)}"))
                return
            put(CONNECTED)
            while not stop.is_set():
                ok, frame = capture.read()
                if not ok or frame is None:
                    put(ConnectionError("camera stream lost (no frame)"))
                    return
                latest.put(frame)
        finally:
            capture.release()

    def _decode(self, put: Callable[[Any], None], latest: LatestFrame, stop: threading.Event) -> None:
        decoder = QrDecoder()
        while not stop.is_set():
            frame = latest.take(timeout=0.5)
            if frame is None:
                continue
            started = time.perf_counter()
            texts = decoder.decode(frame)
            self.frames += 1
            self.decode_ms = (time.perf_counter() - started) * 1000
            for text in texts:
                put(text)

    async def _payload(self, text: str) -> None:
        now = time.monotonic()
        if now - self._recent.get(text, float("-inf")) < self.config.qr_cooldown:
            return
        self._recent = {t: at for t, at in self._recent.items() if now - at < self.config.qr_cooldown}
        self._recent[text] = now
        await self.deliver(QrScan(text, self.name))

    def reader_status(self) -> dict[str, Any]:
        return {"source": redact_url(self.config.source), "frames": self.frames,
                "last_decode_ms": round(self.decode_ms, 1)}
