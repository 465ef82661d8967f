"""The camera worker process: capture + QR decoding, isolated from the daemon.

Why a process: OpenCV and FFmpeg are large C libraries (~30 MB resident) decoding untrusted network
video. In their own process a crash or a leak costs a camera restart, never the daemon (whose death
would drop every relay and the control socket). The daemon reads this worker's stdout, one JSON
object per line:

    {"ev": "connected"}
    {"ev": "qr", "texts": ["DPK1:..."]}     (the codes in a decoded frame, when they differ from the last)
    {"ev": "stats", "frames": 150, "decode_ms": 9.4}
    {"ev": "error", "message": "camera stream lost (no frame)"}     (then the worker exits 1)

Run by hand to watch a camera: ``python -m doorphoned.readers.camera_worker SOURCE``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2

from doorphoned.core.urls import redact_url
from doorphoned.readers.qr import QrDecoder

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 3000
STATS_EVERY = 5.0
_out_lock = threading.Lock()


def emit(**event: Any) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def open_capture(source: str) -> Any:
    """A VideoCapture for a URL (FFmpeg, with open/read timeouts) or a device index."""
    if source.isdigit():
        return cv2.VideoCapture(int(source))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


class LatestFrame:
    """A one-frame mailbox: a slow decoder gets the newest frame, never a growing backlog."""

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


def decode_forever(latest: LatestFrame) -> None:
    decoder, frames, spent, last_stats = QrDecoder(), 0, 0.0, time.monotonic()
    shown: list[str] = []
    while True:
        frame = latest.take(timeout=0.5)
        if frame is None:
            continue
        started = time.perf_counter()
        texts = sorted(set(decoder.decode(frame)))
        if texts != shown:  # changes only: the daemon tells a code left in view from one shown again
            emit(ev="qr", texts=texts)
            shown = texts
        frames += 1
        spent = (time.perf_counter() - started) * 1000
        if time.monotonic() - last_stats >= STATS_EVERY:
            emit(ev="stats", frames=frames, decode_ms=round(spent, 1))
            last_stats = time.monotonic()


def exit_with_parent() -> None:
    """The daemon holds our stdin open; EOF means it is gone (even by kill -9): so are we."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m doorphoned.readers.camera_worker SOURCE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=exit_with_parent, name="parent-watch", daemon=True).start()
    source = argv[0]
    capture = open_capture(source)
    if not capture.isOpened():
        emit(ev="error", message=f"cannot open camera source {redact_url(source)}")
        return 1
    emit(ev="connected")
    latest = LatestFrame()
    threading.Thread(target=decode_forever, args=(latest,), name="qr", daemon=True).start()
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            emit(ev="error", message="camera stream lost (no frame)")
            capture.release()
            return 1
        latest.put(frame)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
