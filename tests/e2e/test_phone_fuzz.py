"""Property fuzz of what phones send: NFC answers to the challenge and Bluetooth adverts.

Each interface is fuzzed twice. In process, at full size: hostile bytes through the reader's own parsing
(``readers/nfc_phone.exchange`` with a target that answers anything; ``BleReader`` fed adverts), and every
presentation that comes out through the decision against a real SQLite store with enrolled phones. Through real
processes: hw-sim sends hostile answers over the NFC link and floods of hostile adverts over its fake BlueZ into
one long-lived daemon. Invariants: nothing opens (hw-sim's relay history unchanged, no grant), nothing in the store
changes but the door log, the daemon lives and the readers stay up, and a genuine phone still opens afterwards.

``PHONE_FUZZ_CASES`` sets the in-process cases per interface (``make test``: 500; ``make fuzz-phone``: 10,000) and
``PHONE_FUZZ_LIVE`` the adverts (x10) and NFC answers through the processes (``make test``: 20; full: 200).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.decide import PhoneKeyRecord, UserRecord, decide
from doorphoned.access.devicekey import DeviceKey
from doorphoned.access.gate import StoreAccessView
from doorphoned.app.config import load_default
from doorphoned.core.clock import FixedClock
from doorphoned.core.phonekeys import (
    BLE_TOKEN_BYTES,
    CHALLENGE_BYTES,
    COMPANY_ID,
    SLOT_SECONDS,
    UnitKey,
    key_tag,
    nfc_message,
    point,
)
from doorphoned.core.presentations import BlePhone, NfcPhoneTap
from doorphoned.core.store import Store
from doorphoned.readers.ble import BleReader
from doorphoned.readers.nfc_phone import NotAPhone, PhoneError, exchange
from tests.e2e.test_reader_fuzz import _store_snapshot
from tests.phones import access_entries, energised, enrol, feature, unit_key
from tests.procs import wait_for

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

CASES = int(os.environ.get("PHONE_FUZZ_CASES", "500"))
LIVE = int(os.environ.get("PHONE_FUZZ_LIVE", "20"))
SETTINGS = settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
HOSTILE_IDS = ["\x00", "\u202e", "\ud800", "\udfff", "\ufeff", "NaN", "Infinity", "-0", "1e999", "..", "a" * 41,
               "k1\x00", "\u202ek1", "k1"]
NOW = datetime.now(UTC).replace(microsecond=0)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def answers(draw: Any) -> bytes:
    """Answers to the challenge: random bytes, or the format's shape with each part made hostile."""
    shape = draw(st.integers(0, 2))
    if shape == 0:
        return draw(st.binary(max_size=300))
    if shape == 1:  # the right layout for an enrolled key id: only the challenge and signature are wrong
        key_id = draw(st.sampled_from([b"k0", b"k1"]))
        return bytes((len(key_id),)) + key_id + draw(st.binary(min_size=CHALLENGE_BYTES, max_size=CHALLENGE_BYTES)) \
            + draw(st.binary(min_size=8, max_size=72)) + b"\x90\x00"
    key_id = _encode(draw(st.sampled_from(HOSTILE_IDS) | st.text(max_size=50)))
    size = draw(st.sampled_from([len(key_id), 0, 255, len(key_id) + 1, max(len(key_id) - 1, 0)]))
    challenge = draw(st.binary(min_size=0, max_size=20))
    signature = draw(st.binary(max_size=80) | st.just(b"\x30\x44" + b"\x02\x20" + b"\x01" * 32 + b"\x02\x20" +
                                                         b"\xff" * 32))
    status = draw(st.sampled_from([b"\x90\x00", b"\x6a\x82", b"\x90", b""]))
    return bytes((min(size, 255),)) + key_id + challenge + signature + status


@st.composite
def adverts(draw: Any) -> bytes:
    """Manufacturer data: random, or 24 bytes of the token layout with hostile fields."""
    shape = draw(st.integers(0, 2))
    if shape == 0:
        return draw(st.binary(max_size=512))
    fields = bytearray(draw(st.binary(min_size=BLE_TOKEN_BYTES, max_size=BLE_TOKEN_BYTES)))
    fields[0] = draw(st.sampled_from([1, 1, 1, 0, 2, 255]))
    fields[14] = draw(st.sampled_from([1, 2, 3, 0, 4, 255]))
    fields[15] |= 1
    if shape == 2:  # an enrolled key's tag, a current slot: only the MAC is wrong
        fields[1:5] = draw(st.sampled_from(TAGS))
        fields[9:13] = (int(NOW.timestamp()) // SLOT_SECONDS).to_bytes(4, "big")
        fields[13] = 1
    return bytes(fields)


PHONES = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
TAGS = [key_tag(point(p.public_key())) for p in PHONES]


@pytest.fixture
def world(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    creds = CredentialStore(store, DeviceKey(b"k" * 32))
    creds.add_user(UserRecord("u1", "U"), NOW)
    for n, phone in enumerate(PHONES):
        creds.add_phone_key(PhoneKeyRecord(f"k{n}", "u1", point(phone.public_key()),
                                           frozenset({"nfc", "hands-free", "tap", "shake"})), NOW)
    unit = UnitKey.ephemeral()
    yield creds, StoreAccessView(creds, frozenset({1, 2}), ZoneInfo("UTC"), unit=unit), unit
    store.close()


class AnswersAnything:
    """An ISO-DEP target that selects the application and answers the challenge with ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def send_apdu(self, cla: int, ins: int, p1: int, p2: int, data: Any = None, mrl: int = 0,
                  check_status: bool = True) -> bytes:
        return b"\x01\x90\x00" if ins == 0xA4 else self.answer


def test_nfc_answers_in_process_never_open(world):
    _creds, view, unit = world
    seen = {"parsed": 0, "ended": 0}

    @SETTINGS
    @given(answers(), st.sampled_from([1, 2, 3]))
    def fuzz(answer: bytes, door: int) -> None:
        try:
            tap = exchange(AnswersAnything(answer), unit)
        except PhoneError:
            seen["ended"] += 1
            return
        assert isinstance(tap, NfcPhoneTap) and not isinstance(tap, NotAPhone)
        seen["parsed"] += 1
        assert not decide(tap, door, NOW, view).granted

    fuzz()
    # the one well-formed answer by an enrolled key to *this* challenge opens: the fuzz could have found it
    challenge = b"c" * CHALLENGE_BYTES
    signature = PHONES[0].sign(nfc_message(challenge, unit.unit_id, "k0"), ec.ECDSA(hashes.SHA256()))
    assert decide(NfcPhoneTap("k0", challenge, signature, True), 1, NOW, view).granted
    assert seen["parsed"] + seen["ended"] >= CASES
    print(f"NFC answers in process: {seen}")


class Presented:
    def __init__(self) -> None:
        self.seen: list[BlePhone] = []

    async def present(self, credential: Any, doors: Any) -> list[Any]:
        self.seen.append(credential)
        return []

    async def request(self, credential: Any, door_id: int) -> Any:
        raise AssertionError("readers present")


class Advert:
    def __init__(self, data: bytes, rssi: Any) -> None:
        self.manufacturer_data = {COMPANY_ID: data}
        self.rssi = rssi


def test_adverts_in_process_never_open(world):
    _creds, view, _unit = world
    config = load_default(env={}).ble
    rssis = st.integers(-32768, 32767) | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-40, -50])

    async def scenario() -> dict[str, int]:
        gate, clock = Presented(), FixedClock(NOW)
        reader = BleReader(config, gate, clock)  # type: ignore[arg-type]

        @SETTINGS
        @given(st.lists(st.tuples(adverts(), rssis), min_size=1, max_size=6), st.floats(0, 3))
        def fuzz(burst: list[tuple[bytes, Any]], step: float) -> None:
            for data, rssi in burst:
                for _ in range(config.min_samples):  # each advert heard often enough to be judged
                    reader._advert(None, Advert(data, rssi))
                clock.advance(step)

        fuzz()
        await asyncio.sleep(0)  # let the presentations run
        for credential in gate.seen:
            for door in (1, 2):
                assert not decide(credential, door, NOW, view).granted, credential
        return {"adverts": reader.adverts, "garbage": reader.garbage, "presented": len(gate.seen)}

    counts = asyncio.run(scenario())
    assert counts["adverts"] >= CASES and counts["presented"] > 0
    print(f"adverts in process: {counts}")


# ---------------------------------------------------------------- through the processes


def _granted(d) -> int:
    with sqlite3.connect(f"file:{d.state_dir / 'doorphoned.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM door_log WHERE kind = 'access' AND granted = 1").fetchone()[0])


def test_hostile_answers_and_adverts_through_one_daemon(ble_daemon, hwsim, tmp_path):
    d = ble_daemon
    user = d.ctl_json("user", "add", "Gil", "--doors", "1")["id"]
    enrol(d, hwsim, tmp_path, "gil-phone", user)
    key = unit_key(d, tmp_path)
    pid, before = d.proc.pid, _store_snapshot(d)
    samples: list[bytes] = []

    @settings(max_examples=LIVE * 10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(adverts(), answers())
    def collect(advert: bytes, answer: bytes) -> None:
        samples.append(advert)
        samples.append(answer)

    collect()
    adverts_sent = samples[0::2]
    items = [{"address": f"C0:FF:EE:00:00:{n % 8:02X}", "data": a.hex(), "rssi": -40} for n, a in
             enumerate(a for a in adverts_sent for _ in range(3))]
    for start in range(0, len(items), 40):
        reply = _raw(hwsim, {"op": "phone_ble_raw", "items": items[start:start + 40], "interval": 0.002})
        assert reply["ok"], reply
    for answer in samples[1::2][:LIVE]:
        reply = _raw(hwsim, {"op": "phone_nfc_answer", "answer": answer.hex(), "timeout": 5})
        assert "ok" in reply
    wait_for(lambda: feature(d, "ble")["adverts"] >= len(items) // 2, timeout=60, what="the adverts heard")
    assert d.proc.poll() is None and d.ctl_json("status")["pid"] == pid
    assert "Traceback" not in d.log_text()
    assert "reader nfc fault" not in d.log_text() and "reader ble fault" not in d.log_text()
    assert feature(d, "nfc")["phone_errors"] > 0  # the garbage answers ended their exchanges, counted
    assert energised(hwsim) == 0 and _granted(d) == 0
    assert _store_snapshot(d) == before
    assert feature(d, "ble")["reader"] == "ok" and feature(d, "nfc")["reader"] == "ok"
    hwsim.cmd("phone", "ble", "gil-phone", "--unit-key", key, "--rssi", "-50")  # the readers still work
    wait_for(lambda: energised(hwsim) == 1, timeout=30, what="the genuine phone to open over BLE")
    hwsim.cmd("phone", "nfc", "gil-phone")
    wait_for(lambda: energised(hwsim) == 2, timeout=30, what="the genuine phone to open over NFC")
    assert access_entries(d, 2)[0]["granted"]
    print(f"through the processes: {len(items)} adverts ({feature(d, 'ble')}), {LIVE} NFC answers "
          f"({feature(d, 'nfc')['phone_errors']} ended as errors)")


def _raw(hwsim, request: dict[str, Any]) -> dict[str, Any]:
    import json

    control, replies = hwsim.control()
    with control:
        control.sendall(json.dumps(request).encode() + b"\n")
        return dict(json.loads(replies.readline()))
