"""Offline-signed temp keys: the second QR format, whose text carries the key's terms signed by the cloud. Pure.

Why: a temp key synced from the cloud opens only once the unit has received it; a key made while the unit is
offline (the network is down, which is when couriers still come) would not work. A signed key carries its
own terms and the cloud's P-256 ECDSA signature over them, so the unit can check it with nothing but the
cloud's public key. The format (contract, version 1; docs/signed-keys.md has it byte by byte)::

    DPS1:<base32 of payload || signature>

``payload`` is a compact binary record (version, repeat, signer fingerprint, scope, key id, doors,
validity, count or window, recipients, name); ``signature`` is r || s (32 bytes each, big-endian) of
ECDSA P-256 / SHA-256 over ``DOMAIN + payload``, with s in its low half (the unit refuses the other half:
one signature, one text). Base32 (RFC 4648, upper case, no padding) keeps the whole text in the QR
alphanumeric alphabet, a denser QR than base64 in byte mode.

Parsing is strict: every length is bounded, reserved bits are zero, nothing trails, and the payload must be
the canonical encoding of the terms it decodes to, so one key has exactly one payload. This module only
reads and writes the format and checks signatures; what a valid key may open is the access core's
(:mod:`doorphoned.access.decide`), with the same rules as a synced temp key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from doorphoned.core.presentations import CredentialFormatError
from doorphoned.core.schedule import WeeklyWindow

PREFIX = "DPS"
VERSION = 1
DOMAIN = b"doorphone signed temp key\x00"  # what is signed is DOMAIN + payload: a signature of nothing else fits
TEXT_MAX = 1200  # characters of a whole QR text; a real key is 150-250
SIG_LEN = 64
FINGERPRINT_LEN = 4
MAX_DOOR = 16
MAX_RECIPIENTS = 8
NAME_MAX = 32  # bytes of UTF-8
COUNT_MAX = 100
REPEATS: tuple[Literal["never", "daily", "weekly"], ...] = ("never", "daily", "weekly")
ALL_DAYS = 0x7F
_ID = re.compile(rb"^[A-Za-z0-9_-]{1,40}$")
_SCOPE = re.compile(rb"^[A-Za-z0-9_-]{1,64}$")
_USER = re.compile(rb"^[A-Za-z0-9_.@-]{1,64}$")
_BASE32 = re.compile(r"^[A-Z2-7]+$")
_B32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's group order n
Repeat = Literal["never", "daily", "weekly"]


class SignatureError(ValueError):
    """A well-formed signed key whose signature does not hold; ``reason`` is the decision's reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Terms:
    """What a signed key says: the same terms as a synced temp key, plus the scope it is valid in."""

    key_id: str
    scope: str
    doors: frozenset[int]
    start: datetime
    end: datetime
    repeat: Repeat = "never"
    count: int | None = 1  # never: uses on each door, on each unit
    window: WeeklyWindow | None = None  # daily/weekly: days and minutes of the day, in the site's time zone
    recipients: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class SignedKey:
    terms: Terms
    signer: bytes  # fingerprint of the public key it claims to be signed by
    payload: bytes
    signature: bytes

    @property
    def message(self) -> bytes:
        return DOMAIN + self.payload


# ---------------------------------------------------------------- keys and fingerprints


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The first 4 bytes of SHA-256 over the key's DER SubjectPublicKeyInfo: which trusted key to try."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:FINGERPRINT_LEN]


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from PEM; ValueError saying what is wrong otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:  # an unknown algorithm OID: the
        # fuzz found UnsupportedAlgorithm, which is no ValueError, escaping the sync command and the config check
        raise ValueError(f"not a PEM public key ({str(exc)[:80]})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not a P-256 (secp256r1) public key")
    return key


def read_public_key(entry: str) -> ec.EllipticCurvePublicKey:
    """An ``[access] cloud_public_keys`` entry: an inline PEM or the path of a PEM file."""
    if "-----BEGIN" in entry:
        return load_public_key(entry.encode())
    try:
        data = Path(entry).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {entry}: {exc.strerror or exc}") from None
    return load_public_key(data)


@dataclass(frozen=True)
class TrustedKey:
    label: str  # where it came from: "config 1", "sync <fingerprint>"
    key: ec.EllipticCurvePublicKey
    fingerprint: bytes = field(init=False)  # computed once: every scan compares it

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.key))


@dataclass(frozen=True)
class Trust:
    """The cloud public keys this unit accepts signed keys from, and the scopes it answers to (its site id,
    its device id). Several keys so the cloud can rotate: sign with the new one once every unit has it."""

    keys: tuple[TrustedKey, ...] = ()
    scopes: frozenset[str] = frozenset()

    def signer(self, signed: SignedKey) -> TrustedKey:
        """The trusted key whose signature holds over ``signed``; SignatureError otherwise."""
        if not self.keys:
            raise SignatureError("no_trusted_key", "this unit trusts no cloud key ([access] cloud_public_keys): "
                                 "signed keys are refused")
        candidates = [k for k in self.keys if k.fingerprint == signed.signer]
        if not candidates:
            raise SignatureError("bad_signature",
                                 f"signed by key {signed.signer.hex()}, which this unit does not trust")
        r, s = int.from_bytes(signed.signature[:32]), int.from_bytes(signed.signature[32:])
        der = encode_dss_signature(r, s)
        for candidate in candidates:
            try:
                candidate.key.verify(der, signed.message, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return candidate
        raise SignatureError("bad_signature", "the signature does not match the key's terms (altered or forged)")


def trust_from(entries: Iterable[tuple[str, str]], scopes: Iterable[str]) -> Trust:
    """A Trust from (label, PEM-or-path) pairs; raises ValueError naming the bad entry."""
    keys = []
    for label, entry in entries:
        try:
            keys.append(TrustedKey(label, read_public_key(entry)))
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
    return Trust(tuple(keys), frozenset(s for s in scopes if s))


# ---------------------------------------------------------------- encoding


def encode_payload(terms: Terms, signer: bytes) -> bytes:
    """The canonical payload of ``terms`` (ValueError when a term is out of the format's bounds)."""
    _check_terms(terms)
    out = bytearray([VERSION, REPEATS.index(terms.repeat)])
    out += signer
    out += _short(terms.scope.encode())
    out += _short(terms.key_id.encode())
    out += struct.pack(">HII", sum(1 << (d - 1) for d in terms.doors), _epoch(terms.start), _epoch(terms.end))
    if terms.repeat == "never":
        out.append(cast(int, terms.count))
    else:
        window = cast(WeeklyWindow, terms.window)
        out += struct.pack(">BHH", sum(1 << d for d in window.days), window.start, window.end)
    out.append(len(terms.recipients))
    for user in terms.recipients:
        out += _short(user.encode())
    out += _short(terms.name.encode())
    return bytes(out)


def sign(terms: Terms, private_key: ec.EllipticCurvePrivateKey) -> str:
    """The QR text of ``terms`` signed with ``private_key`` (deterministic, RFC 6979: one key, one text)."""
    payload = encode_payload(terms, fingerprint(private_key.public_key()))
    der = private_key.sign(DOMAIN + payload, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    s = min(s, _ORDER - s)  # the low half: (r, n - s) verifies too, and would be a second text of the same key
    return encode_text(payload + r.to_bytes(32) + s.to_bytes(32))


def encode_text(blob: bytes) -> str:
    return f"{PREFIX}{VERSION}:" + base64.b32encode(blob).decode().rstrip("=")


def _short(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def _epoch(instant: datetime) -> int:
    return int(instant.timestamp())


def _check_terms(terms: Terms) -> None:
    if not _ID.match(terms.key_id.encode()):
        raise ValueError("a key id is 1-40 characters of A-Z a-z 0-9 _ -")
    if not _SCOPE.match(terms.scope.encode()):
        raise ValueError("a scope (site or unit id) is 1-64 characters of A-Z a-z 0-9 _ -")
    if not terms.doors or not all(isinstance(d, int) and 1 <= d <= MAX_DOOR for d in terms.doors):
        raise ValueError(f"doors are 1-{MAX_DOOR}, at least one")
    start, end = _epoch(terms.start), _epoch(terms.end)
    if not 0 <= start < end < 2**32 or start != terms.start.timestamp() or end != terms.end.timestamp():
        raise ValueError("start and end are whole seconds between 1970 and 2106, start before end")
    if terms.repeat not in REPEATS:
        raise ValueError("repeat is never, daily or weekly")
    if terms.repeat == "never" and (terms.window is not None or terms.count is None
                                    or not 1 <= terms.count <= COUNT_MAX):
        raise ValueError(f"a repeat=never key has a count 1-{COUNT_MAX} and no window")
    if terms.repeat != "never" and (terms.window is None or terms.count is not None):
        raise ValueError("a daily or weekly key has a window and no count")
    if terms.repeat == "daily" and terms.window is not None and terms.window.days != frozenset(range(7)):
        raise ValueError("a daily key's window is every day")
    if len(terms.recipients) > MAX_RECIPIENTS or len(set(terms.recipients)) != len(terms.recipients) \
            or not all(_USER.match(u.encode()) for u in terms.recipients):
        raise ValueError(f"at most {MAX_RECIPIENTS} distinct recipient user ids")
    if len(terms.name.encode()) > NAME_MAX or not terms.name.isprintable():
        raise ValueError(f"a name is at most {NAME_MAX} bytes of printable text")


# ---------------------------------------------------------------- decoding


def is_signed_text(text: str) -> bool:
    """Is this scanned text meant to be a signed key (any version)? The QR decision branches on it."""
    return text.startswith(PREFIX)


def parse_signed(text: str) -> SignedKey:
    """A signed key's terms from a scanned text, the signature not yet checked (see :meth:`Trust.signer`).

    Raises CredentialFormatError saying what is wrong, never echoing the text."""
    if len(text) > TEXT_MAX:
        raise CredentialFormatError(f"signed key text too long ({len(text)} characters)")
    version = re.match(r"^DPS(\d{1,3}):", text)
    if not version:
        raise CredentialFormatError("malformed signed key (no DPS<version>: prefix)")
    if int(version.group(1)) != VERSION:
        raise CredentialFormatError(f"signed key version {version.group(1)} is not supported (this unit reads 1)")
    blob = _b32decode(text[version.end():])
    if len(blob) <= SIG_LEN:
        raise CredentialFormatError("signed key too short")
    payload, signature = blob[:-SIG_LEN], blob[-SIG_LEN:]
    terms, signer = _decode_payload(payload)
    r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
    if not (0 < r < _ORDER and 0 < s <= _ORDER // 2):
        raise CredentialFormatError("signed key's signature is out of range (or not in its canonical low-s form)")
    return SignedKey(terms, signer, payload, signature)


def _b32decode(body: str) -> bytes:
    """Strict base32: the upper-case alphabet only, no padding, and the one text that encodes these bytes."""
    if not body or not _BASE32.match(body) or len(body) % 8 in (1, 3, 6):
        raise CredentialFormatError("signed key is not base32 (A-Z 2-7, no padding)")
    try:
        blob = base64.b32decode(body + "=" * (-len(body) % 8))
    except binascii.Error:
        raise CredentialFormatError("signed key is not base32") from None
    unused = len(body) * 5 % 8  # bits of the last character past the last byte: a second text if not zero
    if _B32_ALPHABET.index(body[-1]) & ((1 << unused) - 1):
        raise CredentialFormatError("signed key's base32 is not canonical")
    return blob


class _Reader:
    """Reads the payload field by field; any short read is a format error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise CredentialFormatError("signed key payload is cut short")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def short(self, pattern: re.Pattern[bytes], what: str, allow_empty: bool = False) -> str:
        data = self.take(self.byte())
        if not (allow_empty and not data) and not pattern.match(data):
            raise CredentialFormatError(f"signed key: bad {what}")
        return data.decode("ascii")


def _decode_payload(payload: bytes) -> tuple[Terms, bytes]:
    reader = _Reader(payload)
    version, flags = reader.byte(), reader.byte()
    if version != VERSION:
        raise CredentialFormatError(f"signed key payload version {version} is not supported")
    if flags >= len(REPEATS):
        raise CredentialFormatError("signed key: unknown repeat (or reserved bits set)")
    repeat = REPEATS[flags]
    signer = reader.take(FINGERPRINT_LEN)
    scope = reader.short(_SCOPE, "scope")
    key_id = reader.short(_ID, "key id")
    mask, start, end = struct.unpack(">HII", reader.take(10))
    doors = frozenset(d for d in range(1, MAX_DOOR + 1) if mask >> (d - 1) & 1)
    count, window = _decode_limits(reader, repeat)
    recipients = tuple(reader.short(_USER, "recipient") for _ in range(reader.byte()))
    name = _decode_name(reader.take(reader.byte()))
    if reader.at != len(payload):
        raise CredentialFormatError("signed key payload has trailing bytes")
    try:
        terms = Terms(key_id, scope, doors, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC),
                      repeat, count, window, recipients, name)
        canonical = encode_payload(terms, signer)
    except ValueError as exc:
        raise CredentialFormatError(f"signed key terms are invalid: {exc}") from None
    if canonical != payload:
        raise CredentialFormatError("signed key payload is not in canonical form")
    return terms, signer


def _decode_limits(reader: _Reader, repeat: Repeat) -> tuple[int | None, WeeklyWindow | None]:
    if repeat == "never":
        return reader.byte(), None
    days, first, last = struct.unpack(">BHH", reader.take(5))
    if days & 0x80:
        raise CredentialFormatError("signed key: reserved weekday bit set")
    try:
        return None, WeeklyWindow(frozenset(d for d in range(7) if days >> d & 1), first, last)
    except ValueError as exc:
        raise CredentialFormatError(f"signed key: bad window ({exc})") from None


def _decode_name(data: bytes) -> str:
    try:
        name = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialFormatError("signed key: the name is not UTF-8") from None
    if not name.isprintable():
        raise CredentialFormatError("signed key: the name has control characters")
    return name
