"""The camera's section (``[camera]``): the capture source and what its QR codes open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from doorphoned.core.config import Source, check_reader, setting


@dataclass(frozen=True)
class CameraConfig:
    enabled: bool = setting(False, doc="Capture frames from the camera (QR codes now; faces and monitor later).")
    source: str = setting("", doc="Camera source: an `http://` MJPEG URL, an `rtsp://` URL, a V4L2 device index "
                          "or `/dev/videoN`; "
                          "a password in the URL is never shown.", url=True)
    qr_doors: tuple[int, ...] = setting([1], doc="Doors a temp-key QR code shown here opens.")
    qr_cooldown: float = setting(1.0, doc="Seconds a QR code must be out of view before it counts again; a code "
                                 "left in view is one presentation however long it stays.", min=0, max=600)
    capture: Literal["auto", "mjpeg", "opencv"] = setting(
        "auto", doc="How frames are read: `mjpeg` reads an `http://` MJPEG stream itself (an idle camera costs "
        "almost nothing: unchanged frames are never fully decoded); `opencv` uses OpenCV/FFmpeg (RTSP, V4L2 "
        "device, any URL; every frame is decoded); `auto` = `mjpeg` for `http://` sources, else `opencv`.")
    fps: int = setting(15, doc="Frame rate asked of a V4L2 device (`source` = index or `/dev/videoN`); network "
                       "cameras send their own rate.", min=1, max=60)
    active_seconds: float = setting(3.0, doc="After the picture changed, seconds of full frames analysed "
                                    "(QR, motion) before the camera idles again.", min=0.5, max=600)
    change_fraction: float = setting(0.01, doc="Idle change detector: the share of the 80x60 greyscale picture "
                                     "that must change for the camera to wake (0.01 = 48 pixels, a hand or a "
                                     "phone; sensor noise and slow light changes stay below).", min=0.0, max=1.0)
    change_delta: int = setting(16, doc="Idle change detector: grey levels (0-255) a pixel of the small picture "
                                "must move by to count as changed.", min=1, max=255)
    wake_on_door: float = setting(5.0, doc="Seconds of full-frame analysis when a door opens (its sensor); "
                                  "0 = a door opening does not wake the camera.", min=0, max=600)

    def validate(self, door_ids: frozenset[int], source: Source) -> None:
        check_reader("camera", self.enabled, ("source", self.source), ("qr_doors", self.qr_doors), door_ids, source)
