"""The access core: who may open which door, now, and why not. Pure: no I/O, no clock, no globals.

Every credential type ends in :func:`decide`. The caller (the gate) supplies the instant and a
read-only view of what the unit knows, so the same function answers live requests and
``access check --at`` questions identically. A refusal always carries a machine-readable reason
and a human detail that never repeats a secret.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from doorphoned.access.credentials import parse_qr
from doorphoned.access.signedkeys import SignatureError, SignedKey, Trust, TrustedKey, is_signed_text, parse_signed
from doorphoned.core.phonekeys import SLOT_SECONDS, ble_mac, key_tag, nfc_message, verify
from doorphoned.core.presentations import (
    BlePhone,
    CardTap,
    Credential,
    CredentialFormatError,
    DtmfCode,
    ExitButton,
    FaceMatch,
    InstallerOpen,
    NfcPhoneTap,
    PinEntry,
    QrScan,
    RemoteOpen,
)
from doorphoned.core.schedule import WeeklyWindow, in_any_window


class Reason(StrEnum):
    """Why a decision came out the way it did (DESIGN §3); the string is the contract."""

    GRANTED = "granted"
    UNKNOWN = "unknown"  # no user or key has this PIN / card / QR
    MALFORMED = "malformed"  # not a credential at all: bad keypad entry, QR of another format
    UNKNOWN_DOOR = "unknown_door"
    DOOR_NOT_ALLOWED = "door_not_allowed"
    DISABLED = "disabled"  # the user exists but is switched off
    EXPIRED = "expired"  # temp key past its end
    NOT_YET_VALID = "not_yet_valid"  # temp key before its start
    OUTSIDE_SCHEDULE = "outside_schedule"  # user schedule or daily/weekly key window
    USES_EXHAUSTED = "uses_exhausted"  # repeat-never key used up on this door
    LOCKED_OUT = "locked_out"  # keypad locked after repeated wrong PINs
    NO_TRUSTED_KEY = "no_trusted_key"  # a signed temp key on a unit that trusts no cloud key
    WRONG_SITE = "wrong_site"  # a signed temp key signed for another site or unit
    REVOKED = "revoked"  # a signed temp key whose id the cloud revoked (or whose synced key was removed)
    REPLAYED = "replayed"  # a single-use phone credential seen again (NFC answer, BLE counter)
    BAD_SIGNATURE = "bad_signature"  # a phone's signature/MAC, or a signed temp key's signature, does not verify
    STALE = "stale"  # a BLE token from a time slot too far from now
    MODE_NOT_ALLOWED = "mode_not_allowed"  # the phone key is not enrolled for this mode (nfc, shake, ...)
    TOO_FAR = "too_far"  # the phone is not as close as its BLE mode requires
    LIVENESS = "liveness"  # a face that did not pass the liveness check (a photo, a screen)


# ---------------------------------------------------------------- what the core reads


@dataclass(frozen=True)
class UserRecord:
    id: str
    name: str
    enabled: bool = True
    doors: frozenset[int] | None = None  # None = every door
    windows: tuple[WeeklyWindow, ...] = ()  # empty = any time
    department: str = ""


Repeat = Literal["never", "daily", "weekly"]


@dataclass(frozen=True)
class TempKeyRecord:
    id: str
    name: str
    doors: frozenset[int]
    repeat: Repeat
    start: datetime
    end: datetime
    window: WeeklyWindow | None = None  # daily/weekly: the time of day (and weekdays)
    each_door_counts: int | None = None  # never: uses per door on this unit
    recipients: tuple[str, ...] = ()  # a delivery key: the user ids a package is for (the package room)
    signed_by: str | None = None  # an offline-signed key: the label of the trusted cloud key that signed it


@dataclass(frozen=True)
class PhoneKeyRecord:
    """An enrolled phone: its P-256 public point, the modes it may use, until when."""

    id: str
    user_id: str
    public_point: bytes
    modes: frozenset[str]
    expires: datetime | None = None
    source: str = "local"

    @property
    def tag(self) -> bytes:
        return key_tag(self.public_point)


class AccessView(Protocol):
    """What the core may read about the unit's current data (a snapshot, as far as it matters)."""

    def door_ids(self) -> frozenset[int]: ...
    def timezone(self) -> ZoneInfo: ...
    def user_by_pin(self, pin: str) -> UserRecord | None: ...
    def key_by_pin(self, pin: str) -> TempKeyRecord | None: ...
    def user_by_card(self, uid: str) -> UserRecord | None: ...
    def user_by_id(self, user_id: str) -> UserRecord | None: ...
    def key_uses(self, key_id: str, door: int) -> int: ...
    def locked_out(self, source: str, now: datetime) -> bool: ...
    # offline-signed temp keys
    def trust(self) -> Trust: ...
    def revoked(self, key_id: str) -> bool: ...
    def key_by_id(self, key_id: str) -> TempKeyRecord | None: ...
    def signed_key_uses(self, key_id: str, door: int) -> int: ...
    def unit_id(self) -> str: ...
    def phone_key(self, key_id: str) -> PhoneKeyRecord | None: ...
    def phone_key_by_tag(self, tag: bytes) -> PhoneKeyRecord | None: ...
    def ble_counter(self, key: PhoneKeyRecord) -> int: ...
    def ble_secret(self, key: PhoneKeyRecord) -> bytes: ...


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: Reason
    credential: str
    subject: str
    door: int
    user: UserRecord | None = None
    key: TempKeyRecord | None = None
    detail: str = ""
    phone: PhoneKeyRecord | None = None  # the enrolled phone key a BLE/NFC phone named
    mode: str = ""  # the phone's mode: nfc, shake, hands-free, tap
    counter: int | None = None  # a granted BLE token's counter: the record keeps it as the high-water mark
    facts: tuple[tuple[str, float | int | str | None], ...] = ()  # door-log detail fields (a face's distance)

    @property
    def wrong_pin(self) -> bool:
        """A keypad entry that counts towards lockout: nobody's PIN, or not a PIN at all."""
        return self.credential == "pin" and self.reason in (Reason.UNKNOWN, Reason.MALFORMED)


# ---------------------------------------------------------------- the decision


def decide(credential: Credential, door: int, now: datetime, view: AccessView) -> Decision:
    """Decide whether ``credential`` opens ``door`` at ``now``."""
    if door not in view.door_ids():
        return _refuse(credential, door, Reason.UNKNOWN_DOOR, f"this unit has no door {door}")
    if isinstance(credential, ExitButton):
        if credential.door != door:
            return _refuse(credential, door, Reason.DOOR_NOT_ALLOWED, f"exit button of door {credential.door}")
        return Decision(True, Reason.GRANTED, credential.kind, credential.subject, door)
    if isinstance(credential, InstallerOpen):
        return Decision(True, Reason.GRANTED, credential.kind, credential.subject, door)
    if isinstance(credential, DtmfCode):
        return _decide_dtmf(credential, door)
    if isinstance(credential, PinEntry):
        return _decide_pin(credential, door, now, view)
    if isinstance(credential, QrScan):
        return _decide_qr(credential, door, now, view)
    if isinstance(credential, RemoteOpen):
        return _decide_remote(credential, door, now, view)
    if isinstance(credential, NfcPhoneTap):
        return _decide_nfc_phone(credential, door, now, view)
    if isinstance(credential, BlePhone):
        return _decide_ble(credential, door, now, view)
    if isinstance(credential, FaceMatch):
        return _decide_face(credential, door, now, view)
    return _decide_card(credential, door, now, view)


def _decide_dtmf(code: DtmfCode, door: int) -> Decision:
    """A code opens the door it is configured for, and only that one."""
    if code.relay != door:
        return _refuse(code, door, Reason.DOOR_NOT_ALLOWED, f"the code entered is door {code.relay}'s")
    return Decision(True, Reason.GRANTED, code.kind, code.subject, door,
                    detail=f"opened during call with {code.peer} (relay {code.relay})")


def _decide_remote(command: RemoteOpen, door: int, now: datetime, view: AccessView) -> Decision:
    """A remote open for a person follows that person's rules; one without a person (portal) opens."""
    if command.user_id is None:
        return Decision(True, Reason.GRANTED, command.kind, command.subject, door)
    user = view.user_by_id(command.user_id)
    if user is None:
        return _refuse(command, door, Reason.UNKNOWN, f"no user {command.user_id!r} on this unit")
    decision = _decide_user(command, user, door, now, view)
    return Decision(decision.granted, decision.reason, decision.credential, f"{command.source}: {decision.subject}",
                    door, user, None, decision.detail)


def _decide_face(face: FaceMatch, door: int, now: datetime, view: AccessView) -> Decision:
    """A face follows its user's rules (doors, schedule, enabled) once it is known and, when checked, live."""
    facts: tuple[tuple[str, float | int | str | None], ...] = (
        ("distance", round(face.distance, 4) if face.distance == face.distance else None),
        ("capture_id", face.capture_id))
    user = view.user_by_id(face.user_id) if face.user_id is not None else None
    if user is None:
        decision = _refuse(face, door, Reason.UNKNOWN, "the face matches no enrolled user")
    elif face.liveness:
        decision = _refuse(face, door, Reason.LIVENESS, f"not a live face ({face.liveness})", user=user)
    else:
        decision = _decide_user(face, user, door, now, view)
    return replace(decision, facts=facts)


def _subject(credential: Credential) -> str:
    if isinstance(credential, PinEntry):
        return f"PIN at {credential.source}"
    if isinstance(credential, QrScan):
        return f"QR at {credential.source}"
    if isinstance(credential, CardTap):
        return f"card {credential.uid}"
    return credential.subject


def _refuse(credential: Credential, door: int, reason: Reason, detail: str = "", user: UserRecord | None = None,
            key: TempKeyRecord | None = None) -> Decision:
    subject = f"{user.name} ({user.id})" if user else f"{key.name} ({key.id})" if key else _subject(credential)
    return Decision(False, reason, credential.kind, subject, door, user, key, detail)


def _decide_pin(entry: PinEntry, door: int, now: datetime, view: AccessView) -> Decision:
    if view.locked_out(entry.source, now):
        return _refuse(entry, door, Reason.LOCKED_OUT, f"{entry.source} is locked after repeated wrong PINs")
    digits = entry.digits
    if entry.problem:
        return _refuse(entry, door, Reason.MALFORMED, entry.problem)
    if not digits.isascii() or not digits.isdigit() or not 4 <= len(digits) <= 8:
        return _refuse(entry, door, Reason.MALFORMED, "a PIN is 4-8 digits")
    user = view.user_by_pin(digits)
    if user is not None:
        return _decide_user(entry, user, door, now, view)
    key = view.key_by_pin(digits) if len(digits) == 8 else None
    if key is not None:
        return _decide_key(entry, key, door, now, view)
    return _refuse(entry, door, Reason.UNKNOWN, "no user or temp key has this PIN")


def _decide_qr(scan: QrScan, door: int, now: datetime, view: AccessView) -> Decision:
    if is_signed_text(scan.text):
        return _decide_signed(scan, door, now, view)
    try:
        key_id, pin = parse_qr(scan.text)
    except CredentialFormatError as exc:
        return _refuse(scan, door, Reason.MALFORMED, str(exc))
    key = view.key_by_pin(pin)
    if key is None or key.id != key_id:
        return _refuse(scan, door, Reason.UNKNOWN, "no temp key matches this QR code (deleted?)")
    return _decide_key(scan, key, door, now, view)


def _decide_signed(scan: QrScan, door: int, now: datetime, view: AccessView) -> Decision:
    """An offline-signed key: the format, then the signature by a trusted cloud key, then its scope and the
    revocation list, then exactly the rules of a synced temp key. A synced key of the same id wins: its
    (newer) terms apply and the uses of both forms are one count."""
    try:
        signed = parse_signed(scan.text)
    except CredentialFormatError as exc:
        return _refuse(scan, door, Reason.MALFORMED, str(exc))
    trust = view.trust()
    try:
        trusted = trust.signer(signed)
    except SignatureError as exc:
        return _refuse(scan, door, Reason(exc.reason), str(exc))
    key = signed_record(signed, trusted)
    if signed.terms.scope not in trust.scopes:
        return _refuse(scan, door, Reason.WRONG_SITE, f"signed for {signed.terms.scope!r}, not for this unit "
                       f"({', '.join(sorted(trust.scopes)) or 'no site_id or device_id set'})", key=key)
    if view.revoked(key.id):
        return _refuse(scan, door, Reason.REVOKED, "the cloud revoked this key", key=key)
    return _decide_key(scan, view.key_by_id(key.id) or key, door, now, view)


def signed_record(signed: SignedKey, trusted: TrustedKey) -> TempKeyRecord:
    """A verified signed key as the temp-key record the rules read."""
    terms = signed.terms
    return TempKeyRecord(terms.key_id, terms.name or "signed key", terms.doors, terms.repeat, terms.start, terms.end,
                         terms.window, terms.count, terms.recipients, signed_by=trusted.label)


def _decide_card(tap: CardTap, door: int, now: datetime, view: AccessView) -> Decision:
    user = view.user_by_card(tap.uid)
    if user is None:
        return _refuse(tap, door, Reason.UNKNOWN, f"card {tap.uid} is not enrolled")
    return _decide_user(tap, user, door, now, view)


def _decide_user(credential: Credential, user: UserRecord, door: int, now: datetime, view: AccessView) -> Decision:
    if not user.enabled:
        return _refuse(credential, door, Reason.DISABLED, "user is disabled", user=user)
    if user.doors is not None and door not in user.doors:
        return _refuse(credential, door, Reason.DOOR_NOT_ALLOWED, f"user may not open door {door}", user=user)
    if not in_any_window(user.windows, now, view.timezone()):
        windows = "; ".join(str(w) for w in user.windows)
        return _refuse(credential, door, Reason.OUTSIDE_SCHEDULE, f"allowed {windows}", user=user)
    return Decision(True, Reason.GRANTED, credential.kind, f"{user.name} ({user.id})", door, user=user)


def _decide_key(credential: Credential, key: TempKeyRecord, door: int, now: datetime, view: AccessView) -> Decision:
    if door not in key.doors:
        return _refuse(credential, door, Reason.DOOR_NOT_ALLOWED, f"key is for doors {sorted(key.doors)}", key=key)
    if now < key.start:
        return _refuse(credential, door, Reason.NOT_YET_VALID, f"valid from {key.start.isoformat()}", key=key)
    if now >= key.end:
        return _refuse(credential, door, Reason.EXPIRED, f"expired at {key.end.isoformat()}", key=key)
    if key.window is not None and not key.window.contains(now, view.timezone()):
        return _refuse(credential, door, Reason.OUTSIDE_SCHEDULE, f"valid {key.window}", key=key)
    if key.each_door_counts is not None and _uses(view, key, door) >= key.each_door_counts:
        return _refuse(credential, door, Reason.USES_EXHAUSTED,
                       f"all {key.each_door_counts} uses on door {door} are spent", key=key)
    return Decision(True, Reason.GRANTED, credential.kind, f"{key.name} ({key.id})", door, key=key)


def _uses(view: AccessView, key: TempKeyRecord, door: int) -> int:
    return view.signed_key_uses(key.id, door) if key.signed_by is not None else view.key_uses(key.id, door)
# ---------------------------------------------------------------- phones (docs/phone.md)


def _decide_nfc_phone(tap: NfcPhoneTap, door: int, now: datetime, view: AccessView) -> Decision:
    """Signature first (garbage never learns more than ``unknown``/``bad_signature``), then freshness, then the
    key's own terms, then the user's."""
    key = view.phone_key(tap.key_id)
    if key is None:
        return _refuse(tap, door, Reason.UNKNOWN, f"no phone key {tap.key_id!r} on this unit")
    if not verify(key.public_point, tap.signature, nfc_message(tap.challenge, view.unit_id(), tap.key_id)):
        return _phone_refusal(tap, door, Reason.BAD_SIGNATURE, "the answer is not signed by this key", key, "nfc")
    if not tap.fresh:
        return _phone_refusal(tap, door, Reason.REPLAYED, "a signed answer to an earlier challenge", key, "nfc")
    return _decide_phone(tap, key, "nfc", door, now, view)


def _decide_ble(seen: BlePhone, door: int, now: datetime, view: AccessView) -> Decision:
    token = seen.token
    key = view.phone_key_by_tag(token.tag)
    if key is None:
        return _refuse(seen, door, Reason.UNKNOWN, f"no phone key with tag {token.tag.hex()} on this unit")
    mode = token.mode
    if not hmac.compare_digest(ble_mac(view.ble_secret(key), token, view.unit_id()), token.mac):
        return _phone_refusal(seen, door, Reason.BAD_SIGNATURE, "the token's MAC is not this key's for this unit",
                              key, mode)
    if token.door != door:
        return _phone_refusal(seen, door, Reason.DOOR_NOT_ALLOWED, f"the token is for door {token.door}", key, mode)
    slot = int(now.timestamp()) // SLOT_SECONDS
    if abs(slot - token.slot) > 1:
        return _phone_refusal(seen, door, Reason.STALE, f"time slot {token.slot}, now {slot}", key, mode)
    if token.counter <= view.ble_counter(key):
        return _phone_refusal(seen, door, Reason.REPLAYED, f"counter {token.counter} was seen already", key, mode)
    if not seen.in_range:
        return _phone_refusal(seen, door, Reason.TOO_FAR, f"{mode} at {seen.rssi:.0f} dBm", key, mode)
    decision = _decide_phone(seen, key, mode, door, now, view)
    return replace(decision, counter=token.counter) if decision.granted else decision


def _decide_phone(credential: NfcPhoneTap | BlePhone, key: PhoneKeyRecord, mode: str, door: int, now: datetime,
                  view: AccessView) -> Decision:
    if mode not in key.modes:
        return _phone_refusal(credential, door, Reason.MODE_NOT_ALLOWED, f"key {key.id} may not use {mode}", key,
                              mode)
    if key.expires is not None and now >= key.expires:
        return _phone_refusal(credential, door, Reason.EXPIRED, f"key {key.id} expired at {key.expires.isoformat()}",
                              key, mode)
    user = view.user_by_id(key.user_id)
    if user is None:
        return _phone_refusal(credential, door, Reason.UNKNOWN, f"no user {key.user_id!r}", key, mode)
    return replace(_decide_user(credential, user, door, now, view), phone=key, mode=mode)


def _phone_refusal(credential: Credential, door: int, reason: Reason, detail: str, key: PhoneKeyRecord,
                   mode: str) -> Decision:
    return replace(_refuse(credential, door, reason, detail), subject=f"phone key {key.id}", phone=key, mode=mode)
