"""QR decoding on camera frames: zxing-cpp, and pyzbar only where zxing saw a code it could not read.

Chosen by measurement (bench/qr_decoders.py, docs/performance.md): on 640x480 camera-like frames zxing-cpp
takes ~1 ms where pyzbar takes ~15-25 ms, blank or not, and reads clear codes as well; on hard frames (blur,
low contrast, steep angles) pyzbar reads a few more. So pyzbar runs only on frames where zxing reports a
detected but undecodable symbol (``return_errors=True``): hard frames keep pyzbar's decode rate, blank
frames and clear codes cost zxing's millisecond. pyzbar (with ctypes and libzbar, ~4 MB of RSS) is imported at
the first such frame, not at start: an idle unit never needs it (the first hard frame pays its import once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zxingcpp

QR_ONLY: Any = zxingcpp.BarcodeFormat.QRCode


def payload_text(data: bytes) -> str:
    """Bytes from a QR code as text; undecodable bytes stay visible as U+FFFD so the core rejects them."""
    return data.decode("utf-8", errors="replace")


def grey(frame: np.ndarray) -> np.ndarray:
    """A single-channel view of a BGR frame (the green channel: no conversion pass, sharp enough)."""
    return frame if frame.ndim == 2 else frame[:, :, 1]


class QrDecoder:
    """``decode(frame)`` -> the texts of the QR codes in it. ``fallbacks`` counts pyzbar runs."""

    def __init__(self, fallback: bool = True) -> None:
        self.fallback = fallback
        self.fallbacks = 0

    def decode(self, frame: np.ndarray) -> list[str]:
        image = np.ascontiguousarray(grey(frame))
        results: list[Any] = zxingcpp.read_barcodes(image, formats=QR_ONLY, return_errors=True)
        found = [payload_text(bytes(r.bytes)) for r in results if r.valid]
        if found or not self.fallback or not results:
            return found
        self.fallbacks += 1  # zxing saw a symbol it could not read: let zbar try
        from pyzbar import pyzbar

        return [payload_text(s.data) for s in pyzbar.decode(image, symbols=[pyzbar.ZBarSymbol.QRCODE])]
