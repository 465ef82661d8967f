"""JPEG encoding of frames: the camera process's half of captures (the file is written by core/files.py).

Why a module of its own: it imports OpenCV, and the daemon must never load OpenCV (its memory, and a crash
in a C decoder must cost a camera restart, not the door daemon). ``camera/captures.py`` (the daemon's half:
names, retention, rows) imports this only in :meth:`CaptureStore.take`, which tests and benches call; the
daemon asks the camera process for a ``snapshot`` (``camera/capture_ops.py``) instead.
"""

from __future__ import annotations

import cv2
import numpy as np

from doorphoned.camera.capture_files import MAX_SIDE, CaptureError, Encoded


def encode(image: object, quality: int) -> Encoded:
    """``image`` as JPEG at ``quality`` (pure: safe in any thread)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise CaptureError("a capture needs an HxW or HxWx3 uint8 picture")
    height, width = image.shape[:2]
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise CaptureError(f"picture size {width}x{height} is outside 1..{MAX_SIDE}")
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CaptureError("the picture could not be encoded as JPEG")
    return Encoded(data.tobytes(), width, height)
