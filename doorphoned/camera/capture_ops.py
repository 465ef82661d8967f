"""The camera process's capture ops: ``snapshot`` (a request) encodes a current picture into a file.

Why here and not in the daemon: JPEG encoding needs OpenCV, which only this process loads. The daemon's
``CaptureStore.take_snapshot`` names a hidden temp file inside its captures folder; this op wakes the camera
(an idle camera publishes no frames, and the last one may be minutes old), waits for the next frame,
encodes it, writes the file (new, 0600, fsynced) and replies ``size``/``width``/``height``. The daemon
renames it and records the row. The wait runs in a thread of its own, so other ops are not held up; the
reply comes from that thread.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doorphoned.camera import protocol
from doorphoned.camera.capture_files import DIR_NAME, TEMP_NAME, CaptureError
from doorphoned.core.files import write_new

if TYPE_CHECKING:
    from doorphoned.camera.process import CameraProcess

SNAPSHOT_WAIT = 3.0  # seconds for a woken camera's next frame (a network camera's reconnect takes longer: refused)
SNAPSHOT_WAKE = 2.0
MAX_CONCURRENT = 4


def register(process: CameraProcess) -> None:
    """Add the capture ops to ``process.ops`` (called before ``hello`` lists them)."""
    busy = threading.BoundedSemaphore(MAX_CONCURRENT)

    def op_snapshot(message: dict[str, Any]) -> object:
        req = protocol.request_id(message)
        if req is None:
            raise protocol.ProtocolError("snapshot is a request (it needs req)")
        path = snapshot_path(protocol.text(message, "path", limit=1024))
        quality = int(protocol.number(message, "quality", 85, 10, 100))
        if not busy.acquire(blocking=False):
            raise protocol.ProtocolError(f"at most {MAX_CONCURRENT} snapshots at a time")
        threading.Thread(target=_snapshot, args=(process, req, path, quality, busy), name="snapshot",
                         daemon=True).start()
        return protocol.DEFERRED

    process.ops["snapshot"] = op_snapshot
    watch: list[Any] = []  # the one MotionWatch, once the daemon sent settings

    def op_motion(message: dict[str, Any]) -> dict[str, Any]:
        """Start (or re-set) motion alerts: ``settings`` as ``MotionSettings.from_dict`` reads them."""
        from doorphoned.camera.motion import MotionDetector, MotionSettings, MotionSettingsError, MotionWatch
        from doorphoned.core.clock import SystemClock

        try:
            settings = MotionSettings.from_dict(message.get("settings"))
        except MotionSettingsError as exc:
            raise protocol.ProtocolError(f"motion: {exc}") from None
        detector = MotionDetector(settings, SystemClock())
        if watch:
            watch[0].detector = detector
        else:
            watch.append(MotionWatch(process.hub, detector, lambda alert: _alert(process, alert)))
            watch[0].start()
        return {"armed": detector.armed()}

    process.ops["motion"] = op_motion


def _alert(process: CameraProcess, alert: Any) -> None:
    age_ms = round((time.monotonic() - alert.frame_monotonic) * 1000, 1)  # glass -> alert
    process.out.emit("motion", **alert.as_dict(), age_ms=age_ms)


def snapshot_path(text: str) -> Path:
    """Only a hidden temp name directly inside a ``captures`` folder that exists: this op never writes
    anywhere else, whatever the line says."""
    path = Path(text)
    if not path.is_absolute() or ".." in path.parts or path.parent.name != DIR_NAME or not TEMP_NAME.match(path.name):
        raise protocol.ProtocolError("snapshot path must be a capture temp file inside a captures folder")
    if path.parent.is_symlink() or not path.parent.is_dir():
        raise protocol.ProtocolError("snapshot path's folder does not exist")
    return path


def _snapshot(process: CameraProcess, req: int, path: Path, quality: int, busy: threading.BoundedSemaphore) -> None:
    from doorphoned.camera import jpeg

    try:
        mailbox = process.hub.subscribe("snapshot")
        try:
            process.activity.wake(SNAPSHOT_WAKE)
            frame = mailbox.get(SNAPSHOT_WAIT)
        finally:
            mailbox.close()
        if frame is None:
            raise CaptureError(f"no picture from the camera within {SNAPSHOT_WAIT:g} s")
        encoded = jpeg.encode(frame.image, quality)
        write_new(path, encoded.jpeg)
        process.out.emit("reply", req=req, ok=True, size=len(encoded.jpeg), width=encoded.width,
                         height=encoded.height, seq=frame.seq)
    except (CaptureError, OSError) as exc:
        message = str(exc) if isinstance(exc, CaptureError) else f"snapshot file: {os.strerror(exc.errno or 0)}"
        process.out.emit("reply", req=req, ok=False, message=message[:300])
    except Exception as exc:  # a bug must still answer: the daemon waits for this reply
        process.out.emit("reply", req=req, ok=False, message=f"snapshot failed: {type(exc).__name__}")
    finally:
        busy.release()
