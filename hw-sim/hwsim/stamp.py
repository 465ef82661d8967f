"""A 32-bit number drawn into a frame as big black/white squares, and read back from a decoded frame.

hw-sim stamps each camera frame with the instant it was made (milliseconds of ``time.monotonic()``,
modulo 2**32); a client that decodes the monitor stream reads the stamp back and subtracts it from its
own ``time.monotonic()`` (same machine, same clock): that is glass-to-glass latency, through capture,
encoder, RTSP and decoder. Squares of 16 px survive H.264 at any sane bitrate and JPEG at any quality.

Layout: a white strip of 2 rows of 34 cells (16 px) across the top-left corner; row 0 holds a fixed
start pattern (black, white, black, white ...) so a reader can tell "no stamp" from "stamp 0"; row 1
holds the bits, most significant first, in cells 1..32 (black = 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CELL = 16
BITS = 32
WIDTH_CELLS = BITS + 2
HEIGHT_PX = 2 * CELL
WIDTH_PX = WIDTH_CELLS * CELL


def draw(frame: Any, value: int) -> None:
    """Stamp ``value`` (0 <= value < 2**32) into the top-left corner of a BGR frame, in place."""
    if not 0 <= value < 2**BITS:
        raise ValueError("stamp value must fit in 32 bits")
    if frame.shape[0] < HEIGHT_PX or frame.shape[1] < WIDTH_PX:
        raise ValueError(f"frame too small for a stamp ({WIDTH_PX}x{HEIGHT_PX} px needed)")
    frame[:HEIGHT_PX, :WIDTH_PX] = 255
    for cell in range(0, WIDTH_CELLS, 2):
        frame[:CELL, cell * CELL:(cell + 1) * CELL] = 0
    for bit in range(BITS):
        if value >> (BITS - 1 - bit) & 1:
            x = (bit + 1) * CELL
            frame[CELL:2 * CELL, x:x + CELL] = 0


def _dark(frame: Any, row: int, cell: int) -> bool:
    """Whether a cell's centre (a 6x6 patch, averaged over colours) is dark."""
    y, x = row * CELL + CELL // 2, cell * CELL + CELL // 2
    return float(np.mean(frame[y - 3:y + 3, x - 3:x + 3])) < 128


def read(frame: Any) -> int | None:
    """The stamp in a (decoded) frame, or ``None`` when the start pattern is not there."""
    if frame.shape[0] < HEIGHT_PX or frame.shape[1] < WIDTH_PX:
        return None
    if any(_dark(frame, 0, cell) != (cell % 2 == 0) for cell in range(WIDTH_CELLS)):
        return None
    value = 0
    for bit in range(BITS):
        value = value << 1 | int(_dark(frame, 1, bit + 1))
    return value


def now_ms(monotonic: float) -> int:
    """The stamp for an instant on ``time.monotonic()``'s scale."""
    return int(monotonic * 1000) % (1 << BITS)


def age_ms(stamp: int, monotonic: float) -> int:
    """How many milliseconds before ``monotonic`` a stamp was drawn (wrap-around handled)."""
    return (now_ms(monotonic) - stamp) % (1 << BITS)
