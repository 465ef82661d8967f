"""The NFC phone tap: a challenge–response over ISO-DEP with a phone that runs the door-access application.

On every ISO-DEP target the reader SELECTs the door-access AID (``core/phonekeys.AID``). A target that does not
answer 9000 is a card (its UID is presented as before; a DESFire card answers 6A82). One that does is a phone,
never a card, whatever happens next: the reader sends a fresh random challenge with the unit id and the unit's
signature over both, and the phone answers ``key id | the challenge | ECDSA signature`` over (challenge, unit
id, key id). The reader only parses: the signature is checked by ``access/decide.py`` against the enrolled key.

Runs on the nfcpy thread. Every failure (a timeout, a short or overlong answer, bytes that are not the format)
ends the exchange with :class:`PhoneError`, logged and counted, never raised into nfcpy's loop. Protocol:
docs/phone.md.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from doorphoned.core.phonekeys import (
    AID,
    CHALLENGE_BYTES,
    INS_CHALLENGE,
    MAX_SIGNATURE,
    SW_OK,
    UnitKey,
    unit_challenge_message,
)
from doorphoned.core.presentations import NfcPhoneTap

KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,40}")
MAX_RESPONSE = 256


class PhoneError(Exception):
    """A phone that selected the application but did not complete the exchange (the reason is loggable)."""


class ApduTarget(Protocol):
    """What the exchange needs of nfcpy's ``Type4Tag``."""

    def send_apdu(self, cla: int, ins: int, p1: int, p2: int, data: Any = None, mrl: int = 0,
                  check_status: bool = True) -> Any: ...


@dataclass(frozen=True)
class NotAPhone:
    """The target did not select the door-access application: it is a card."""


NOT_A_PHONE = NotAPhone()


def exchange(tag: ApduTarget, unit: UnitKey, source: str = "nfc") -> NfcPhoneTap | NotAPhone:
    """SELECT, then challenge; raises PhoneError when a phone's part goes wrong."""
    try:
        selected = bytes(tag.send_apdu(0x00, 0xA4, 0x04, 0x00, AID, mrl=256, check_status=False))
    except Exception:  # nfcpy raises several types for a target that does not speak ISO 7816-4
        return NOT_A_PHONE
    if selected[-2:] != SW_OK:
        return NOT_A_PHONE
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    unit_id = unit.unit_id.encode()
    data = challenge + bytes((len(unit_id),)) + unit_id + unit.sign(unit_challenge_message(challenge, unit.unit_id))
    try:
        answer = bytes(tag.send_apdu(0x80, INS_CHALLENGE, 0x00, 0x00, data, mrl=256, check_status=False))
    except Exception as exc:
        raise PhoneError(f"no answer to the challenge ({type(exc).__name__})") from None
    return parse_answer(answer, challenge, source)


def parse_answer(answer: bytes, challenge: bytes, source: str = "nfc") -> NfcPhoneTap:
    """``key id length | key id | challenge (16) | DER signature`` + 9000 -> a presentation."""
    if len(answer) > MAX_RESPONSE or answer[-2:] != SW_OK:
        raise PhoneError(f"the phone refused the challenge (status {answer[-2:].hex() or 'none'})")
    body = answer[:-2]
    if not body:
        raise PhoneError("an empty answer")
    size = body[0]
    key_bytes, echoed, signature = body[1:1 + size], body[1 + size:1 + size + CHALLENGE_BYTES], \
        body[1 + size + CHALLENGE_BYTES:]
    try:
        key_id = key_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise PhoneError("a key id that is not ASCII") from None
    if len(key_bytes) != size or not KEY_ID.fullmatch(key_id):
        raise PhoneError("a malformed key id")
    if len(echoed) != CHALLENGE_BYTES or not 8 <= len(signature) <= MAX_SIGNATURE:
        raise PhoneError(f"an answer of {len(body)} bytes is not key id, challenge and signature")
    return NfcPhoneTap(key_id, echoed, signature, fresh=secrets.compare_digest(echoed, challenge), source=source)
