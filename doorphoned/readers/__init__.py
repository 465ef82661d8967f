"""Credential readers: serial keypad, NFC cards and phones (nfcpy), Bluetooth phones (bleak), QR codes seen by the
camera.

Each is a :class:`~doorphoned.readers.base.ReaderFeature`; backends are imported only when the
configuration enables them. The QR reader gets what the camera feature (``doorphoned/camera/``) sees through
the bus; OpenCV is only ever loaded in the camera process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing ``doorphoned.readers.config`` (doorphonectl does) must stay cheap
    from doorphoned.core.bus import EventBus
    from doorphoned.core.clock import Clock
    from doorphoned.core.feature import Feature
    from doorphoned.core.phonekeys import UnitKey
    from doorphoned.core.ports import Gate
    from doorphoned.readers.config import ReaderSections

READER_NAMES = ("keypad", "nfc", "ble", "qr")


def build_readers(config: ReaderSections, gate: Gate, clock: Clock, bus: EventBus,
                  unit: UnitKey | None = None) -> list[Feature]:
    """The enabled readers; ``unit`` (the unit's key pair) lets the NFC and BLE readers talk to phones."""
    readers: list[Feature] = []
    if config.keypad.enabled:
        from doorphoned.readers.keypad import KeypadReader

        readers.append(KeypadReader(config.keypad, gate, clock))
    if config.nfc.enabled:
        from doorphoned.readers.nfc import NfcReader

        readers.append(NfcReader(config.nfc, gate, clock, unit))
    if config.ble.enabled:
        from doorphoned.readers.ble import BleReader

        readers.append(BleReader(config.ble, gate, clock))
    if config.camera.enabled:
        from doorphoned.readers.qr import QrReader

        readers.append(QrReader(config.camera, gate, clock, bus))
    return readers
