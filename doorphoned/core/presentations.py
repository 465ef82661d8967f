"""What a reader, a call or a command presents to the access gate: the credentials as they were seen.

These are the words every feature speaks with the gate (``core/ports.Gate``): the keypad hands over a
:class:`PinEntry`, the camera a :class:`QrScan`, the NFC reader a :class:`CardTap`, a call a
:class:`DtmfCode`, the cloud a :class:`RemoteOpen`, face recognition a :class:`FaceMatch`. What they grant
is decided in ``access/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from doorphoned.core.phonekeys import BleToken

CARD_UID_BYTES = (4, 7, 10)
_CARD_SEPARATORS = re.compile(r"[\s:-]")


class CredentialFormatError(ValueError):
    """Text that is not a valid credential of the expected kind."""


def normalise_card_uid(text: str) -> str:
    """Hex UID, separators allowed (``04:a1:b2:c3``) -> ``04A1B2C3``; 4, 7 or 10 bytes (ISO 14443A)."""
    uid = _CARD_SEPARATORS.sub("", text.strip()).upper()
    if not uid or len(uid) > 20 or not re.fullmatch(r"[0-9A-F]+", uid) or len(uid) % 2:
        raise CredentialFormatError("a card UID is hex bytes, e.g. 04A1B2C3 or 04:A1:B2:C3:D4:E5:F6")
    if len(uid) // 2 not in CARD_UID_BYTES:
        raise CredentialFormatError("a card UID has 4, 7 or 10 bytes")
    return uid


@dataclass(frozen=True)
class ExitButton:
    """The request-to-exit button wired to one door: it opens that door and no other."""

    door: int
    kind: str = "exit_button"

    @property
    def subject(self) -> str:
        return f"exit button {self.door}"


@dataclass(frozen=True)
class InstallerOpen:
    """``doorphonectl relay open`` by a local user the control socket already admitted."""

    uid: int
    kind: str = "installer"

    @property
    def subject(self) -> str:
        return f"uid {self.uid}"


@dataclass(frozen=True)
class PinEntry:
    """Digits submitted on a keypad (a private PIN or a temp-key PIN); ``source`` names the keypad."""

    digits: str
    source: str = "keypad"
    problem: str = ""  # set by the reader when the entry was not a PIN at all (too long, bad key)
    kind: str = "pin"


@dataclass(frozen=True)
class QrScan:
    """A QR payload read by a camera."""

    text: str
    source: str = "camera"
    kind: str = "qr"


@dataclass(frozen=True)
class CardTap:
    """A card UID (normalised hex) read by an NFC/RFID reader."""

    uid: str
    source: str = "nfc"
    kind: str = "card"


@dataclass(frozen=True)
class NfcPhoneTap:
    """A phone's answer to this unit's NFC challenge (docs/phone.md): the key it names, the challenge it
    signed, its signature. ``fresh`` is the reader's word that ``challenge`` is the one it sent in this
    exchange; a valid signature over any other challenge is a recorded answer played back (``replayed``)."""

    key_id: str
    challenge: bytes
    signature: bytes
    fresh: bool
    source: str = "nfc"
    kind: str = "nfc_phone"

    @property
    def subject(self) -> str:
        return f"phone key {self.key_id}"


@dataclass(frozen=True)
class BlePhone:
    """A phone's BLE token as the reader heard it (``core/phonekeys.BleToken``), with the reader's verdict on
    distance: ``in_range`` is the mode's rule on the smoothed RSSI (``rssi``, dBm)."""

    token: BleToken
    rssi: float
    in_range: bool
    source: str = "ble"
    kind: str = "ble"

    @property
    def subject(self) -> str:
        return f"phone tag {self.token.tag.hex()} ({self.token.mode})"


REMOTE_SOURCES = ("app", "siri", "alexa", "watch", "portal", "home_assistant")


@dataclass(frozen=True)
class RemoteOpen:
    """An open-door command from the cloud; ``user_id`` when a person asked (app, voice, watch)."""

    source: str
    user_id: str | None = None
    kind: str = "remote"

    @property
    def subject(self) -> str:
        return f"{self.source}" + (f" for {self.user_id}" if self.user_id else "")


@dataclass(frozen=True)
class DtmfCode:
    """A door's DTMF code keyed in during a SIP call; the call manager matched the code, ``relay``
    is the door it belongs to and ``peer`` the other end of the call (only admitted calls get here)."""

    peer: str
    relay: int
    kind: str = "dtmf"

    @property
    def subject(self) -> str:
        return f"call with {self.peer}"


@dataclass(frozen=True)
class FaceMatch:
    """A face the recognition worker saw: ``user_id`` when it matched a user's templates (within the threshold,
    the margin, K of N frames), ``None`` for a face nobody's matched. ``distance`` is to the best user's nearest
    template; ``liveness`` is the failed liveness check's reasons when the face did not pass it ('' = passed or
    off). ``capture_id``: a capture the presenter took of the moment, if any (the face feature takes none itself: the
captures' ``granted``/``refused`` triggers take one linked to the door-log entry by its log id). No face data: user
id and distance only."""

    user_id: str | None
    distance: float
    source: str = "camera"
    liveness: str = ""
    capture_id: int | None = None
    kind: str = "face"

    @property
    def subject(self) -> str:
        return f"face at {self.source}"


Credential = (ExitButton | InstallerOpen | PinEntry | QrScan | CardTap | RemoteOpen | DtmfCode | NfcPhoneTap | BlePhone
    | FaceMatch)
