"""hw-sim's phone: the door app's side of the NFC phone tap and of the Bluetooth token (docs/phone.md).

A phone is a P-256 key pair made here (``<hw-sim dir>/phones/NAME.pem``, 0600) and a small state file (its key id,
its BLE counter). Over NFC it is an ISO-DEP card on nfcpy's ``udp:`` link that runs the door-access application:
it answers SELECT and signs the unit's challenge. Over BLE it is manufacturer data that the fake BlueZ
(``hwsim/bluez.py``) shows the daemon. The last NFC answer and the last advert are kept so ``hwsim phone replay``
can play them back, as an attacker with a recorder would.

The wire formats are written out here on purpose rather than imported from the daemon: hw-sim plays the app,
and an app is written from docs/phone.md, not from the unit's code.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AID = bytes.fromhex("F04450484F4E4501")
NFC_CONTEXT = b"doorphone nfc v1"
BLE_CONTEXT = b"doorphone ble v1"
COMPANY_ID = 0xFFFF
SLOT_SECONDS = 30
MODES = {"shake": 1, "hands-free": 2, "tap": 3}
FLAG_SHAKEN = 0x01
# ISO-DEP ATS: FSCI 8 (256-byte frames), FWI 12 (~1.2 s for an answer: a signature by a Python process on a loaded
# 2-core machine can miss 300 ms), no CID
ATS = bytes.fromhex("057880C000")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
ANSWER_TIMEOUT = 1.0


class PhoneError(ValueError):
    pass


@dataclass
class Phone:
    name: str
    key_id: str
    private: ec.EllipticCurvePrivateKey
    counter: int

    @property
    def public_point(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.X962,
                                                      serialization.PublicFormat.UncompressedPoint)

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def tag(self) -> bytes:
        return hashlib.sha256(b"doorphone key tag" + self.public_point).digest()[:4]

    @property
    def address(self) -> str:
        """A stable random-looking BLE address per phone (C0:... : a static random address)."""
        digest = hashlib.sha256(self.name.encode()).digest()
        return ":".join(f"{b:02X}" for b in bytes((0xC0 | digest[0] & 0x3F,)) + digest[1:6])


class PhoneBook:
    """The phones hw-sim plays, kept in a directory beside hw-sim's socket."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def add(self, name: str, key_id: str | None = None) -> Phone:
        _check_name(name)
        if (self.dir / f"{name}.pem").exists():
            raise PhoneError(f"phone {name!r} exists already")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = ec.generate_private_key(ec.SECP256R1())
        _write(self.dir / f"{name}.pem", private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        phone = Phone(name, key_id or name, private, 0)
        self._save(phone)
        return phone

    def get(self, name: str) -> Phone:
        _check_name(name)
        try:
            data = (self.dir / f"{name}.pem").read_bytes()
            state = json.loads((self.dir / f"{name}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PhoneError(f"no phone {name!r} (make one with `hwsim phone add {name}`)") from None
        private = serialization.load_pem_private_key(data, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return Phone(name, state["key_id"], private, int(state["counter"]))

    def next_counter(self, phone: Phone) -> int:
        phone.counter += 1
        self._save(phone)
        return phone.counter

    def _save(self, phone: Phone) -> None:
        _write(self.dir / f"{phone.name}.json", json.dumps({"key_id": phone.key_id, "counter": phone.counter}).encode())

    def keep_last(self, kind: str, record: dict[str, Any]) -> None:
        _write(self.dir / f"last-{kind}.json", json.dumps(record).encode())

    def last(self, kind: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self.dir / f"last-{kind}.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise PhoneError(f"no {kind} exchange recorded yet") from None


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise PhoneError("a phone name is 1-40 letters, digits, '.', '_' or '-'")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# ---------------------------------------------------------------- NFC: the door-access application


def load_unit_key(pem_text: str | None) -> ec.EllipticCurvePublicKey | None:
    if not pem_text:
        return None
    key = serialization.load_pem_public_key(pem_text.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PhoneError("the unit key is not an EC public key")
    return key


class Applet:
    """The app's APDU handler. ``answer`` overrides the answer to the challenge (replay, fuzzing)."""

    def __init__(self, phone: Phone | None, unit_key: ec.EllipticCurvePublicKey | None = None,
                 answer: bytes | None = None) -> None:
        self.phone = phone
        self.unit_key = unit_key
        self.answer = answer
        self.answered: bytes | None = None
        self.answered_mono = 0.0  # when the answer was made (time.monotonic(): one clock for every process)
        self.selected_mono = 0.0  # when the reader selected the application: the exchange began
        self.refused_unit = False

    def __call__(self, apdu: bytes) -> bytes:
        if apdu[:4] == b"\x00\xA4\x04\x00":
            self.selected_mono = time.monotonic()
            return b"\x01\x90\x00" if _apdu_data(apdu) == AID else b"\x6A\x82"
        if apdu[:2] == b"\x80\x10":
            return self._challenge(_apdu_data(apdu))
        return b"\x6D\x00"

    def _challenge(self, data: bytes) -> bytes:
        self.answered_mono = time.monotonic()
        if self.answer is not None:
            self.answered = self.answer
            return self.answer
        assert self.phone is not None
        challenge, size = data[:16], data[16] if len(data) > 16 else 0
        unit_id, unit_sig = data[17:17 + size], data[17 + size:]
        if self.unit_key is not None and not _verifies(self.unit_key, unit_sig,
                                                       b"\x00".join((NFC_CONTEXT, b"unit", challenge, unit_id))):
            self.refused_unit = True  # not the unit this phone was paired with: say nothing
            return b"\x69\x82"
        key_id = self.phone.key_id.encode()
        signature = self.phone.private.sign(b"\x00".join((NFC_CONTEXT, challenge, unit_id, key_id)),
                                            ec.ECDSA(hashes.SHA256()))
        self.answered = bytes((len(key_id),)) + key_id + challenge + signature + b"\x90\x00"
        self.answered_mono = time.monotonic()
        return self.answered


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _apdu_data(apdu: bytes) -> bytes:
    """The data field of a short APDU (CLA INS P1 P2 Lc data [Le])."""
    if len(apdu) < 6:
        return b""
    return apdu[5:5 + apdu[4]]


def present_phone(device: str, applet: Callable[[bytes], bytes], timeout: float) -> bool:
    """Be the phone in front of the reader until one exchange ran (True) or ``timeout`` passed. Blocking.

    nfcpy has no card-side ISO-DEP: this handles the blocks itself (I-blocks answered with the same block
    number, R(NAK) answered with the last block again, S(DESELECT) acknowledged)."""
    import nfc
    import nfc.clf

    target: Any = nfc.clf.LocalTarget("106A")
    target.sens_res = bytearray.fromhex("0400")
    target.sdd_res = bytearray(b"\x08" + secrets.token_bytes(3))  # a random UID, as Android's HCE sends
    target.sel_res = bytearray.fromhex("20")
    clf = nfc.ContactlessFrontend(device)
    try:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            activated = clf.listen(target, left)
            if activated is None:
                return False
            if activated.tt4_cmd and activated.tt4_cmd[0] == 0xE0 and iso_dep(clf, applet):
                return True
        return False
    finally:
        clf.close()


def iso_dep(clf: Any, applet: Callable[[bytes], bytes]) -> bool:
    """Answer the reader's ISO-DEP blocks with ``applet`` until it deselects or goes quiet; True when the
    applet completed an exchange (a phone's challenge answered)."""
    import nfc.clf

    reply, exchanged = ATS, False
    while True:
        try:
            block = bytes(clf.exchange(bytearray(reply), timeout=ANSWER_TIMEOUT))
        except nfc.clf.CommunicationError:
            return exchanged
        if not block:
            return exchanged
        pcb = block[0]
        if pcb & 0xE2 == 0x02 and not pcb & 0x10:  # I-block, no chaining
            reply = bytes((0x02 | pcb & 0x01,)) + applet(block[1:])
            exchanged = exchanged or applet_answered(applet)
        elif pcb & 0xF6 == 0xB2:  # R(NAK): the last block again
            continue
        elif pcb & 0xF7 == 0xC2:  # S(DESELECT)
            with contextlib.suppress(nfc.clf.CommunicationError):
                clf.exchange(bytearray(block[:1]), timeout=0.1)
            return exchanged
        else:
            return exchanged


def applet_answered(applet: Callable[[bytes], bytes]) -> bool:
    return isinstance(applet, Applet) and applet.answered is not None


# ---------------------------------------------------------------- BLE: the advert token


def ble_token(phone: Phone, unit_point: bytes, unit_id: str, counter: int, door: int, mode: str, shaken: bool,
              now: float | None = None) -> bytes:
    """The 24 bytes of manufacturer data (after the company id): docs/phone.md's layout."""
    if mode not in MODES:
        raise PhoneError(f"mode must be one of {', '.join(MODES)}")
    slot = int(time.time() if now is None else now) // SLOT_SECONDS
    fields = (phone.tag + counter.to_bytes(4, "big") + slot.to_bytes(4, "big")
              + bytes((door, MODES[mode], FLAG_SHAKEN if shaken else 0)))
    unit = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unit_point)
    shared = phone.private.exchange(ec.ECDH(), unit)
    secret = HKDF(hashes.SHA256(), 32, salt=None, info=BLE_CONTEXT).derive(shared)
    mac = hmac.new(secret, BLE_CONTEXT + unit_id.encode() + fields, hashlib.sha256).digest()[:8]
    return b"\x01" + fields + mac


def unit_identity(pem_text: str) -> tuple[bytes, str]:
    """The unit's public point and id (SHA-256 of the point, 16 hex digits) from its public key PEM."""
    key = load_unit_key(pem_text)
    if key is None:
        raise PhoneError("BLE needs the unit's public key (--unit-key FILE, from `doorphonectl status --json`)")
    unit_point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return unit_point, hashlib.sha256(unit_point).hexdigest()[:16]


def walk(rssi: int, walk_in: bool, samples: int) -> list[int]:
    """The RSSI of each advert: steady, or walking in from -95 dBm over the first half of them."""
    if not walk_in:
        return [rssi] * samples
    ramp = max(2, samples // 2)
    return [round(-95 + (rssi + 95) * i / (ramp - 1)) for i in range(ramp)] + [rssi] * (samples - ramp)
