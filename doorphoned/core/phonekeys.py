"""Phone credentials' cryptography, shared by the readers (which talk to phones) and access (which decides).

Why in the core: the NFC and BLE readers must sign challenges with the unit's key and parse what phones
send, and ``access/decide.py`` must verify what they parsed; features never import each other, so the
wire formats and the unit's own key pair live here, pure but for :meth:`UnitKey.load_or_create`.

The unit key (``<state_dir>/unit-key.pem``, P-256, 0600) lets a phone tell a real unit from a fake one (it
checks the unit's signature on an NFC challenge) and binds BLE tokens to this unit (the token's MAC key is
derived by ECDH between the phone's key and the unit's key: a token sniffed at one unit is noise at another).
The unit id is the first 8 bytes of SHA-256 of the unit's public point, in hex: no configuration needed, and
it changes only with the key. Protocol: docs/phone.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# ---------------------------------------------------------------- NFC (ISO-DEP, ISO 7816-4 APDUs)
AID = bytes.fromhex("F0445048 4F4E4501".replace(" ", ""))  # proprietary (F0...): "DPHONE" v1
INS_CHALLENGE = 0x10
CHALLENGE_BYTES = 16
NFC_CONTEXT = b"doorphone nfc v1"
SW_OK = b"\x90\x00"
MAX_SIGNATURE = 72  # DER ECDSA P-256 signatures are at most 72 bytes

# ---------------------------------------------------------------- BLE advert (manufacturer data)
COMPANY_ID = 0xFFFF  # Bluetooth SIG's id for tests and development; a product uses its own
BLE_VERSION = 1
BLE_TOKEN_BYTES = 24  # version 1 | tag 4 | counter 4 | slot 4 | door 1 | mode 1 | flags 1 | mac 8
MAC_BYTES = 8
SLOT_SECONDS = 30
BLE_CONTEXT = b"doorphone ble v1"
MODES = ("nfc", "shake", "hands-free", "tap")
BLE_MODES = {1: "shake", 2: "hands-free", 3: "tap"}
FLAG_SHAKEN = 0x01


class PhoneFormatError(ValueError):
    """Bytes from a phone (or a PEM from an installer) that are not what the protocol says."""


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A PEM (SubjectPublicKeyInfo), or base64 of the DER SubjectPublicKeyInfo or of the 65-byte X9.62 point (one
    line: no newline to carry in JSON); only P-256 is accepted."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            raw = base64.b64decode(data.strip(), validate=True)
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw) if raw[:1] == b"\x04" \
                else serialization.load_der_public_key(raw)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise PhoneFormatError("not a P-256 public key (PEM, or base64 of its DER or of its X9.62 point)") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PhoneFormatError("the key must be an EC P-256 (secp256r1) public key")
    return key


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed X9.62 point (65 bytes): how public keys are stored and compared."""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def key_tag(public_point: bytes) -> bytes:
    """The 4 bytes a BLE advert names a phone key by (an advert has no room for the key id)."""
    return hashlib.sha256(b"doorphone key tag" + public_point).digest()[:4]


def pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def nfc_message(challenge: bytes, unit_id: str, key_id: str) -> bytes:
    """What the phone signs: the fresh challenge, this unit, and the key it answers with."""
    return b"\x00".join((NFC_CONTEXT, challenge, unit_id.encode(), key_id.encode()))


def unit_challenge_message(challenge: bytes, unit_id: str) -> bytes:
    """What the unit signs in its challenge, so a phone can tell it is talking to a real unit."""
    return b"\x00".join((NFC_CONTEXT, b"unit", challenge, unit_id.encode()))


def verify(public_point: bytes, signature: bytes, message: bytes) -> bool:
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_point)
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class BleToken:
    """The fields of a phone's advert; :func:`parse_ble` builds it from the manufacturer data."""

    tag: bytes
    counter: int
    slot: int
    door: int
    mode: str
    flags: int
    mac: bytes

    def signed(self, unit_id: str) -> bytes:
        """The bytes the MAC covers: every field and this unit's id."""
        return b"".join((BLE_CONTEXT, unit_id.encode(), self.tag, self.counter.to_bytes(4, "big"),
                         self.slot.to_bytes(4, "big"), bytes((self.door, _mode_code(self.mode), self.flags))))

    def encode(self) -> bytes:
        return b"".join((bytes((BLE_VERSION,)), self.tag, self.counter.to_bytes(4, "big"),
                         self.slot.to_bytes(4, "big"), bytes((self.door, _mode_code(self.mode), self.flags)),
                         self.mac))


def _mode_code(mode: str) -> int:
    return next(code for code, name in BLE_MODES.items() if name == mode)


def parse_ble(data: bytes) -> BleToken:
    """Manufacturer data (without the company id) -> a token; anything else is a PhoneFormatError."""
    if len(data) != BLE_TOKEN_BYTES:
        raise PhoneFormatError(f"a token is {BLE_TOKEN_BYTES} bytes, not {len(data)}")
    if data[0] != BLE_VERSION:
        raise PhoneFormatError(f"token version {data[0]} (this unit reads {BLE_VERSION})")
    mode = BLE_MODES.get(data[14])
    if mode is None:
        raise PhoneFormatError(f"unknown mode {data[14]}")
    return BleToken(bytes(data[1:5]), int.from_bytes(data[5:9], "big"), int.from_bytes(data[9:13], "big"),
                    data[13], mode, data[15], bytes(data[16:24]))


def ble_mac(secret: bytes, token: BleToken, unit_id: str) -> bytes:
    return hmac.new(secret, token.signed(unit_id), hashlib.sha256).digest()[:MAC_BYTES]


def ble_secret(private: ec.EllipticCurvePrivateKey, peer_point: bytes) -> bytes:
    """The per-key MAC key: ECDH between one side's private key and the other's public point, through HKDF."""
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_point)
    shared = private.exchange(ec.ECDH(), peer)
    return HKDF(hashes.SHA256(), 32, salt=None, info=BLE_CONTEXT).derive(shared)


class UnitKey:
    """The unit's own P-256 key pair."""

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        self._private = private
        self.public_point = point(private.public_key())
        self.unit_id = hashlib.sha256(self.public_point).hexdigest()[:16]
        self.public_pem = pem(private.public_key())

    @classmethod
    def load_or_create(cls, path: Path) -> UnitKey:
        """Read the key, or make one atomically (written to a temporary file, fsynced, renamed): made once."""
        try:
            return cls.from_pem(path.read_bytes())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        data = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return cls.from_pem(path.read_bytes())

    @classmethod
    def ephemeral(cls) -> UnitKey:
        """A key that lives as long as the object (tests, benches)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes) -> UnitKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise PhoneFormatError("the unit key must be an EC P-256 private key")
        return cls(key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message, ec.ECDSA(hashes.SHA256()))

    def ble_secret(self, phone_point: bytes) -> bytes:
        return ble_secret(self._private, phone_point)
