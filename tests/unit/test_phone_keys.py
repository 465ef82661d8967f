"""Phone keys: the store (cascade, counters), the decision for NFC answers and BLE tokens (real SQLite store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from doorphoned.access.credstore import CredentialError, CredentialStore
from doorphoned.access.decide import PhoneKeyRecord, Reason, UserRecord, decide
from doorphoned.access.devicekey import DeviceKey
from doorphoned.access.gate import StoreAccessView
from doorphoned.core.phonekeys import (
    SLOT_SECONDS,
    BleToken,
    UnitKey,
    ble_mac,
    ble_secret,
    key_tag,
    nfc_message,
    parse_ble,
    point,
)
from doorphoned.core.presentations import BlePhone, NfcPhoneTap
from doorphoned.core.schedule import WeeklyWindow
from doorphoned.core.store import Store

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def world(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    creds = CredentialStore(store, DeviceKey(b"k" * 32))
    unit = UnitKey.ephemeral()
    creds.add_user(UserRecord("alice", "Alice", doors=frozenset({1})), NOW)
    phone = ec.generate_private_key(ec.SECP256R1())
    key = PhoneKeyRecord("p1", "alice", point(phone.public_key()), frozenset({"nfc", "hands-free"}))
    creds.add_phone_key(key, NOW)
    view = StoreAccessView(creds, frozenset({1, 2}), ZoneInfo("UTC"), unit=unit)
    yield creds, unit, phone, view
    store.close()


def nfc_tap(phone, unit, key_id="p1", fresh=True):
    challenge = b"c" * 16
    signature = phone.sign(nfc_message(challenge, unit.unit_id, key_id), ec.ECDSA(hashes.SHA256()))
    return NfcPhoneTap(key_id, challenge, signature, fresh)


def ble(phone, unit, counter=1, mode="hands-free", door=1, slot=None, in_range=True, unit_point=None):
    slot = int(NOW.timestamp()) // SLOT_SECONDS if slot is None else slot
    token = BleToken(key_tag(point(phone.public_key())), counter, slot, door, mode, 0, b"\0" * 8)
    secret = ble_secret(phone, unit_point or unit.public_point)
    token = BleToken(token.tag, counter, slot, door, mode, 0, ble_mac(secret, token, unit.unit_id))
    return BlePhone(parse_ble(token.encode()), -50.0, in_range)


def test_nfc_answer_by_the_enrolled_key_opens(world):
    _creds, unit, phone, view = world
    decision = decide(nfc_tap(phone, unit), 1, NOW, view)
    assert decision.granted and decision.phone.id == "p1" and decision.mode == "nfc"


@pytest.mark.parametrize("case, reason", [
    ("wrong_key", Reason.BAD_SIGNATURE), ("unknown_id", Reason.UNKNOWN), ("replayed", Reason.REPLAYED),
    ("door", Reason.DOOR_NOT_ALLOWED), ("other_unit", Reason.BAD_SIGNATURE)])
def test_nfc_refusals(world, case, reason):
    _creds, unit, phone, view = world
    door = 2 if case == "door" else 1
    if case == "wrong_key":
        tap = nfc_tap(ec.generate_private_key(ec.SECP256R1()), unit)
    elif case == "unknown_id":
        tap = nfc_tap(phone, unit, key_id="nobody")
    elif case == "other_unit":
        tap = nfc_tap(phone, UnitKey.ephemeral())
    else:
        tap = nfc_tap(phone, unit, fresh=case != "replayed")
    decision = decide(tap, door, NOW, view)
    assert not decision.granted and decision.reason is reason


def test_expired_key_and_mode_not_allowed(world):
    creds, unit, _phone, view = world
    other = ec.generate_private_key(ec.SECP256R1())
    creds.add_phone_key(PhoneKeyRecord("p2", "alice", point(other.public_key()), frozenset({"tap"}),
                                       NOW - timedelta(minutes=1)), NOW)
    assert decide(nfc_tap(other, unit, "p2"), 1, NOW, view).reason is Reason.MODE_NOT_ALLOWED
    assert decide(ble(other, unit, mode="tap"), 1, NOW, view).reason is Reason.EXPIRED


def test_outside_schedule_applies_to_phones(world):
    creds, unit, phone, view = world
    night = WeeklyWindow.parse("mon-sun 00:00-00:01")
    creds.put_user(UserRecord("alice", "Alice", doors=frozenset({1}), windows=(night,)), NOW, "local")
    at = NOW.replace(hour=12)
    assert decide(nfc_tap(phone, unit), 1, at, view).reason is Reason.OUTSIDE_SCHEDULE


def test_ble_token_rules(world):
    _creds, unit, phone, view = world
    assert decide(ble(phone, unit, counter=5), 1, NOW, view).granted
    assert decide(ble(phone, unit, counter=5, door=2), 1, NOW, view).reason is Reason.DOOR_NOT_ALLOWED
    assert decide(ble(phone, unit, counter=6, in_range=False), 1, NOW, view).reason is Reason.TOO_FAR
    old = int(NOW.timestamp()) // SLOT_SECONDS - 3
    assert decide(ble(phone, unit, counter=7, slot=old), 1, NOW, view).reason is Reason.STALE
    other = UnitKey.ephemeral()
    assert decide(ble(phone, unit, counter=8, unit_point=other.public_point), 1, NOW, view).reason \
        is Reason.BAD_SIGNATURE
    assert decide(ble(phone, unit, counter=9, mode="shake"), 1, NOW, view).reason is Reason.MODE_NOT_ALLOWED


def test_counter_high_water_mark_is_kept_with_the_record_and_survives_the_key(world):
    creds, unit, phone, view = world
    public = point(phone.public_key())
    from doorphoned.core.store import DoorLogEntry

    entry = DoorLogEntry(ts=NOW, kind="access", door=1, credential="ble", subject="x", granted=True,
                         reason="granted", detail={})
    creds.record_access(entry, counter=(public, 5))
    assert decide(ble(phone, unit, counter=5), 1, NOW, view).reason is Reason.REPLAYED
    assert decide(ble(phone, unit, counter=6), 1, NOW, view).granted
    creds.remove_phone_key("p1")
    creds.add_phone_key(PhoneKeyRecord("p1", "alice", public, frozenset({"hands-free"})), NOW)
    assert decide(ble(phone, unit, counter=5), 1, NOW, view).reason is Reason.REPLAYED


def test_removing_the_user_removes_the_phones_at_once(world):
    creds, unit, phone, view = world
    creds.remove_user("alice")
    assert creds.phone_key("p1") is None
    assert decide(nfc_tap(phone, unit), 1, NOW, view).reason is Reason.UNKNOWN


def test_the_same_public_key_cannot_be_enrolled_twice(world):
    creds, _unit, phone, _view = world
    creds.add_user(UserRecord("bob", "Bob"), NOW)
    with pytest.raises(CredentialError):
        creds.add_phone_key(PhoneKeyRecord("p9", "bob", point(phone.public_key()), frozenset({"nfc"})), NOW)


def test_unit_key_is_made_once_owner_only(tmp_path):
    path = tmp_path / "unit-key.pem"
    first = UnitKey.load_or_create(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert UnitKey.load_or_create(path).unit_id == first.unit_id


def test_public_keys_are_read_as_pem_or_one_line_base64_and_only_p256():
    import base64

    from cryptography.hazmat.primitives import serialization

    from doorphoned.core.phonekeys import PhoneFormatError, load_public_key

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for text in (pem, base64.b64encode(der), base64.b64encode(point(key))):
        assert point(load_public_key(text)) == point(key)
    other = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for bad in (other, b"", b"not base64!", base64.b64encode(b"\x04" + b"\x00" * 64), pem[:-30]):
        with pytest.raises(PhoneFormatError):
            load_public_key(bad)


def test_a_phone_held_on_the_reader_is_one_presentation_but_a_forged_one_holds_nobody_back():
    import asyncio
    from types import SimpleNamespace

    from doorphoned.app.config import load_default
    from doorphoned.core.clock import FixedClock
    from doorphoned.readers.nfc import NfcReader

    class Gate:
        def __init__(self) -> None:
            self.seen: list[NfcPhoneTap] = []
            self.reason = "granted"

        async def present(self, credential, doors):
            self.seen.append(credential)
            return [SimpleNamespace(granted=self.reason == "granted", reason=self.reason)]

    gate, clock = Gate(), FixedClock(NOW)
    reader = NfcReader(load_default(env={}).nfc, gate, clock, UnitKey.ephemeral())  # type: ignore[arg-type]

    async def scenario() -> None:
        tap = NfcPhoneTap("p1", b"c" * 16, b"s" * 70, True)
        await reader._phone(tap)
        await reader._phone(tap)  # the next poll, phone still there: the same stay
        assert len(gate.seen) == 1
        clock.advance(10)
        gate.reason = "bad_signature"  # a phone naming p1 with another key
        await reader._phone(tap)
        gate.reason = "granted"
        await reader._phone(tap)  # the real p1 right after: presented at once
        assert len(gate.seen) == 3

    asyncio.run(scenario())
