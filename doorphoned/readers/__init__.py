"""Credential readers: serial keypad, NFC cards (nfcpy), camera QR codes; BLE later.

Each is a :class:`~doorphoned.readers.base.ReaderFeature`; backends are imported only when the
configuration enables them, so a unit without a camera never loads OpenCV.
"""

from __future__ import annotations

from doorphoned.core.clock import Clock
from doorphoned.core.feature import Feature
from doorphoned.core.ports import Gate
from doorphoned.readers.config import ReaderSections

READER_NAMES = ("keypad", "nfc", "camera")


def build_readers(config: ReaderSections, gate: Gate, clock: Clock) -> list[Feature]:
    readers: list[Feature] = []
    if config.keypad.enabled:
        from doorphoned.readers.keypad import KeypadReader

        readers.append(KeypadReader(config.keypad, gate, clock))
    if config.nfc.enabled:
        from doorphoned.readers.nfc import NfcReader

        readers.append(NfcReader(config.nfc, gate, clock))
    if config.camera.enabled:
        from doorphoned.readers.camera import CameraReader

        readers.append(CameraReader(config.camera, gate, clock))
    return readers
