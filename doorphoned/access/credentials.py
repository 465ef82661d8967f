"""Credential formats: private PINs, temp-key PINs, card UIDs, ids, and the temp-key QR code. Pure.

Everything here reads untrusted text (keypad, camera, NFC, CLI socket, later MQTT) and either
returns a normalised value or raises :class:`CredentialFormatError` with a message fit for an
installer, never echoing a secret back.

The temp-key QR payload (contract, version 1)::

    DPK1:<key id>:<8-digit PIN>:<check>

``key id`` is 1-40 of ``A-Z a-z 0-9 _ -``; ``check`` is the first 8 hex digits of
SHA-256 over ``DPK1:<key id>:<PIN>``. The prefix tells a scanned key from anything else a camera
may see (URLs, vCards, other vendors' codes); the check rejects misreads and hand-edited codes.
It is not a signature: the PIN is the secret, exactly as when typed on the keypad.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets

# The error type is shared with card UIDs, which the NFC reader reads too: they live with what readers
# present (core/presentations.py).
from doorphoned.core.presentations import CredentialFormatError

QR_PREFIX = "DPK"
QR_VERSION = 1
QR_MAX_LENGTH = 128
PIN_MIN, PIN_MAX = 4, 8
TEMP_PIN_LENGTH = 8
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_QR = re.compile(r"^DPK1:([A-Za-z0-9_-]{1,40}):(\d{8}):([0-9a-f]{8})$")


def check_private_pin(pin: str) -> str:
    """A private PIN: 4-8 digits, and not one a passer-by would try first."""
    if not pin.isascii() or not pin.isdigit():
        raise CredentialFormatError("a PIN is digits only")
    if not PIN_MIN <= len(pin) <= PIN_MAX:
        raise CredentialFormatError(f"a private PIN has {PIN_MIN}-{PIN_MAX} digits")
    if is_trivial_pin(pin):
        raise CredentialFormatError("this PIN is too easy to guess (repeated or consecutive digits)")
    return pin


def is_trivial_pin(pin: str) -> bool:
    """All one digit, or a run up or down (1234, 98765, 0123...)."""
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    return len(steps) == 1 and steps <= {0, 1, 9}


def new_temp_pin() -> str:
    """A random 8-digit temp-key PIN (never trivial)."""
    while True:
        pin = f"{secrets.randbelow(10**TEMP_PIN_LENGTH):0{TEMP_PIN_LENGTH}d}"
        if not is_trivial_pin(pin):
            return pin


def check_temp_pin(pin: str) -> str:
    if not pin.isascii() or not pin.isdigit() or len(pin) != TEMP_PIN_LENGTH:
        raise CredentialFormatError(f"a temp-key PIN has exactly {TEMP_PIN_LENGTH} digits")
    return pin


def check_key_id(key_id: str) -> str:
    if not KEY_ID.match(key_id):
        raise CredentialFormatError("a key id is 1-40 characters of A-Z a-z 0-9 _ -")
    return key_id


def new_key_id() -> str:
    return "tk-" + secrets.token_hex(5)


def check_user_id(user_id: str) -> str:
    if not USER_ID.match(user_id):
        raise CredentialFormatError("a user id is 1-64 characters of A-Z a-z 0-9 _ . @ -")
    return user_id


def pin_hash(device_key: bytes, pin: str) -> bytes:
    """The keyed hash PINs are stored and looked up by (DESIGN §3: never plain at rest)."""
    return hmac.new(device_key, b"pin:" + pin.encode("ascii"), hashlib.sha256).digest()


# ---------------------------------------------------------------- QR


def _qr_check(key_id: str, pin: str) -> str:
    return hashlib.sha256(f"DPK1:{key_id}:{pin}".encode()).hexdigest()[:8]


def encode_qr(key_id: str, pin: str) -> str:
    check_key_id(key_id)
    check_temp_pin(pin)
    return f"DPK1:{key_id}:{pin}:{_qr_check(key_id, pin)}"


def parse_qr(text: str) -> tuple[str, str]:
    """(key id, PIN) from a scanned payload, or CredentialFormatError saying what is wrong with it."""
    if len(text) > QR_MAX_LENGTH:
        raise CredentialFormatError(f"QR payload too long ({len(text)} characters) for a temp key")
    if not text.isascii() or not text.isprintable():
        raise CredentialFormatError("QR payload is binary, not a temp key")
    if not text.startswith(QR_PREFIX):
        raise CredentialFormatError("QR code of another format, not a doorphone temp key")
    version = re.match(r"^DPK(\d+):", text)
    if version and int(version.group(1)) != QR_VERSION:
        raise CredentialFormatError(f"temp-key QR version {version.group(1)} is not supported (this unit reads 1)")
    match = _QR.match(text)
    if not match:
        raise CredentialFormatError("malformed temp-key QR code")
    key_id, pin, check = match.groups()
    if not hmac.compare_digest(check, _qr_check(key_id, pin)):
        raise CredentialFormatError("temp-key QR code check digits do not match (misread or altered)")
    return key_id, pin
