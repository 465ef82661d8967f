"""The camera's section (``[camera]``): the capture source and what its QR codes open."""

from __future__ import annotations

from dataclasses import dataclass

from doorphoned.core.config import Source, check_reader, setting


@dataclass(frozen=True)
class CameraConfig:
    enabled: bool = setting(False, doc="Capture frames from the camera (QR codes now; faces and monitor later).")
    source: str = setting("", doc="OpenCV capture source: a URL (`rtsp://`, `http://…mjpg`) or a device index; "
                          "a password in the URL is never shown.", url=True)
    qr_doors: tuple[int, ...] = setting([1], doc="Doors a temp-key QR code shown here opens.")
    qr_cooldown: float = setting(1.0, doc="Seconds a QR code must be out of view before it counts again; a code "
                                 "left in view is one presentation however long it stays.", min=0, max=600)

    def validate(self, door_ids: frozenset[int], source: Source) -> None:
        check_reader("camera", self.enabled, ("source", self.source), ("qr_doors", self.qr_doors), door_ids, source)
