"""The readers' sections: serial keypad (``[keypad]``) and NFC cards (``[nfc]``).

The camera's QR codes are read by ``readers/camera.py`` from the camera's section
(``camera/config.py``), seen through :class:`QrCameraSettings`: readers do not import the camera folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from doorphoned.core.config import Source, check_reader, setting


@dataclass(frozen=True)
class KeypadConfig:
    enabled: bool = setting(False, doc="Read PINs from a serial keypad.")
    port: str = setting("", doc="Serial device of the keypad (`/dev/ttyS1`; hw-sim: its pty link).")
    baudrate: int = setting(9600, doc="Serial speed.", min=1200, max=921600)
    doors: tuple[int, ...] = setting([1], doc="Doors a PIN entered here opens (each as the PIN allows).")
    digit_timeout: float = setting(5.0, doc="Seconds without a key press that clear a half-typed entry.",
                                   min=1, max=60)
    max_length: int = setting(16, doc="Keys in one entry beyond which it is refused as too long.", min=8, max=64)

    def validate(self, door_ids: frozenset[int], source: Source) -> None:
        check_reader("keypad", self.enabled, ("port", self.port), ("doors", self.doors), door_ids, source)


@dataclass(frozen=True)
class NfcConfig:
    enabled: bool = setting(False, doc="Read ISO 14443A card UIDs with nfcpy.")
    device: str = setting("", doc="nfcpy device: `usb`, `tty:S0:pn532`, `udp:127.0.0.1:PORT` (hw-sim).")
    doors: tuple[int, ...] = setting([1], doc="Doors a card presented here opens (each as the card's user allows).")
    repeat_delay: float = setting(2.0, doc="Seconds a card must be out of the field before it counts again; a card "
                                  "held on the reader is one presentation however long it stays.", min=0, max=60)
    phones: bool = setting(True, doc="Ask ISO-DEP targets for the door-access application (NFC phone tap, "
                           "docs/phone.md); off: every target is a card UID.")

    def validate(self, door_ids: frozenset[int], source: Source) -> None:
        check_reader("nfc", self.enabled, ("device", self.device), ("doors", self.doors), door_ids, source)


class QrCameraSettings(Protocol):
    """What the QR reader reads of the camera's section."""

    @property
    def enabled(self) -> bool: ...

    @property
    def source(self) -> str: ...

    @property
    def qr_doors(self) -> tuple[int, ...]: ...

    @property
    def qr_cooldown(self) -> float: ...


class ReaderSections(Protocol):
    """What :func:`doorphoned.readers.build_readers` reads of the root configuration."""

    @property
    def keypad(self) -> KeypadConfig: ...

    @property
    def nfc(self) -> NfcConfig: ...

    @property
    def camera(self) -> QrCameraSettings: ...
