"""QR decoding on camera frames: pyzbar (libzbar) first, OpenCV's Aruco-based detector as fallback.

Measured on these machines (docs/performance.md): pyzbar decodes most camera-like frames in
~10 ms; ``QRCodeDetectorAruco`` rescues some it misses and costs ~3 ms on frames without a code,
so the fallback runs only when pyzbar found nothing.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from pyzbar import pyzbar


def payload_text(data: bytes) -> str:
    """Bytes from a QR code as text; undecodable bytes stay visible as U+FFFD so the core rejects them."""
    return data.decode("utf-8", errors="replace")


class QrDecoder:
    def __init__(self) -> None:
        self._aruco: Any = cv2.QRCodeDetectorAruco()

    def decode(self, frame: np.ndarray) -> list[str]:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = [payload_text(symbol.data) for symbol in pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE])]
        if found:
            return found
        try:
            ok, texts, _, _ = self._aruco.detectAndDecodeMulti(gray)
        except cv2.error:
            return []
        return [t for t in texts if t] if ok else []
