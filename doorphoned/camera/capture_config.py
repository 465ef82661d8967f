"""The ``[captures]`` section: which events take a snapshot, and how much of the disk captures may use.

Its own module (not ``camera/config.py``) so the camera's capture keys and these stay apart; the values
become a :class:`~doorphoned.camera.captures.CaptureSettings`, whose checks are the same whether the
numbers come from the file, ``DOORPHONED_CAPTURES_*`` or ``config.set``.
"""

from __future__ import annotations

from dataclasses import dataclass

from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.captures import AUTOMATIC, CaptureSettings
from doorphoned.core.config import setting


def _check_triggers(value: tuple[str, ...]) -> str | None:
    unknown = [name for name in value if name not in AUTOMATIC]
    if unknown:
        return f"unknown capture trigger {unknown[0][:40]!r} (use {', '.join(AUTOMATIC)})"
    return None


@dataclass(frozen=True)
class CapturesConfig:
    enabled: bool = setting(False, doc="Keep JPEG snapshots from the camera (needs `camera.enabled`): "
                            "`doorphonectl capture`, the cloud's `capture`, and the automatic triggers below.")
    triggers: tuple[str, ...] = setting(list(AUTOMATIC), doc="Events that take a capture automatically: "
                                        "`call` (a call starts ringing), `granted` / `refused` (an access "
                                        "decision), `forced_open` (the alarm), `motion`, `package` (a delivery "
                                        "key used). A manual capture is always allowed.", check=_check_triggers)
    keep_count: int = setting(1000, doc="Captures kept at most; the oldest go first.", min=1, max=1_000_000)
    keep_bytes: int = setting(200 * 2**20, doc="Bytes of JPEG kept at most; the oldest go first.",
                              min=1024, max=2**50)
    keep_days: float = setting(30.0, doc="Days a capture is kept at most.", min=0.01, max=3650)
    jpeg_quality: int = setting(85, doc="JPEG quality 10-100 of captures.", min=10, max=100)
    min_free_bytes: int = setting(64 * 2**20, doc="A capture that would leave less free space than this on the "
                                  "state disk is refused (the disk never fills with pictures).", min=0, max=2**50)

    def settings(self) -> CaptureSettings:
        """The store's settings (its checks again: the section's limits are the same numbers)."""
        try:
            return CaptureSettings(frozenset(self.triggers), self.keep_count, self.keep_bytes, self.keep_days,
                                   self.jpeg_quality, self.min_free_bytes)
        except CaptureError as exc:  # unreachable through the schema's limits; loud if they drift apart
            raise ValueError(f"[captures]: {exc}") from exc
