"""The readers' sections: serial keypad (``[keypad]``), NFC cards and phones (``[nfc]``), Bluetooth phones (``[ble]``).

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


def _check_bus(value: str) -> str | None:
    if value and not value.startswith(("unix:", "tcp:")):
        return "a D-Bus address, e.g. unix:path=/run/dbus/system_bus_socket"
    return None


@dataclass(frozen=True)
class BleConfig:
    enabled: bool = setting(False, doc="Scan for phones' Bluetooth tokens (Shake, Hands-free, Tap) with bleak.")
    bus: str = setting("", doc="D-Bus address of the system bus BlueZ is on (sets DBUS_SYSTEM_BUS_ADDRESS); empty = "
                       "the system's own. hw-sim: its private bus (`hwsim info`).", check=_check_bus)
    doors: tuple[int, ...] = setting([1], doc="Doors this unit's Bluetooth serves; a token names its door and opens "
                                     "only that one.")
    measured_power: int = setting(-59, doc="Calibrated RSSI of a phone 1 m from the unit (dBm).", min=-100, max=0)
    path_loss: float = setting(2.0, doc="Path-loss exponent of the site (2 = free space; 3-4 indoors, walls).",
                               min=1.0, max=5.0)
    hands_free_m: float = setting(1.0, doc="Hands-free opens when the phone is within this many metres.",
                                  min=0.1, max=10)
    tap_m: float = setting(0.1, doc="Tap as Card opens within this many metres (the phone on the reader).",
                           min=0.01, max=1)
    shake_m: float = setting(2.0, doc="Shake opens within this many metres, when the phone says it was shaken.",
                             min=0.1, max=10)
    smoothing: float = setting(0.4, doc="Weight of a new RSSI sample in the moving average (1 = no smoothing).",
                               min=0.05, max=1.0)
    min_samples: int = setting(3, doc="Adverts of a token heard before its distance is judged.", min=1, max=50)
    too_far_after: float = setting(2.0, doc="Seconds a token is heard out of range before it is refused as too far "
                                   "(once per phone per 30 s).", min=0.2, max=60)
    repeat_delay: float = setting(1.0, doc="Seconds a token must be out of the air before it is presented again "
                                  "(a replay is then refused as replayed).", min=0.1, max=60)

    def validate(self, door_ids: frozenset[int], source: Source) -> None:
        check_reader("ble", self.enabled, ("doors", "set" if self.doors else ""), ("doors", self.doors), door_ids,
                     source)


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
    def ble(self) -> BleConfig: ...

    @property
    def camera(self) -> QrCameraSettings: ...
