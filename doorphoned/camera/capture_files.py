"""What both halves of captures agree on: the folder's name, the temp file's name, the error, the encoded frame.

Why a module of its own: the camera process checks a snapshot's path and encodes frames with these, and
``camera/captures.py`` (the daemon's half) imports asyncio, SQLite and the store, ~10 MB of RSS the camera
process would carry for three names (docs/performance.md, idle RSS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIR_NAME = "captures"
MAX_SIDE = 8192
TEMP_NAME = re.compile(r"^\.\d{8}T\d{6}-[0-9a-f]{8}\.jpg\.tmp$")


class CaptureError(ValueError):
    """A capture refused before anything was written; the message says why (and is safe to show)."""


@dataclass(frozen=True)
class Encoded:
    """A frame as JPEG bytes, ready for :meth:`CaptureStore.keep`."""

    jpeg: bytes
    width: int
    height: int
