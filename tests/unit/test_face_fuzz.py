"""Property fuzz of what reaches face recognition from outside: the cloud's ``face.upsert`` / ``face.remove`` and
the socket's ``face.upload`` (as strict JSON, through the one command registry, into a real SQLite store), the
enrolment process's answer as the daemon reads it, and photo bytes into the decoder.

Generators mix the hostile shapes (tests/fuzz.py): NaN/Infinity as floats and as JSON tokens, duplicate keys,
nesting thousands of levels deep, huge strings, NUL, bidi controls, lone surrogates, wrong types, bursts.
Invariants: a clear refusal (CommandError / PhotoError) or a valid result, never another exception; a refused
request changes nothing in the store (template count and version); anything stored is 128 finite numbers.
`make test` runs a fast pass; `make fuzz-face` runs >= 10,000 cases each.
"""

from __future__ import annotations

import base64
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.decide import UserRecord
from doorphoned.core.clock import FixedClock
from doorphoned.core.commands import CLOUD, CommandError, Peer, Registry
from doorphoned.core.devicekey import DeviceKey
from doorphoned.core.store import Store
from doorphoned.core.strictjson import StrictJsonError, loads
from doorphoned.face.commands import FaceCommands
from doorphoned.face.config import FaceConfig
from doorphoned.face.imagecheck import PhotoError, decode_photo
from doorphoned.face.store import FaceStore
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

CASES = fuzz_cases(300)
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
KEY = DeviceKey(b"f" * 32)
PEER = Peer(uid=0, pid=1, gid=0)


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def good_template(seed: int) -> list[float]:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, 128).round(6).tolist()


numbers = st.one_of(hostile_numbers, st.floats(-0.5, 0.5), st.booleans(), st.none(), hostile_text)
templates = st.one_of(
    st.integers(0, 2**31).map(good_template),
    st.lists(st.floats(-0.5, 0.5), min_size=120, max_size=136),
    st.lists(numbers, min_size=128, max_size=128),
    st.integers(0, 2**31).map(lambda s: [*good_template(s)[:127], float("nan")]),
    st.integers(0, 2**31).map(lambda s: [float("inf"), *good_template(s)[1:]]),
    st.sampled_from([nested(3000), [[0.1] * 128], {"0": 0.1}, "0.1," * 128, [0.1] * 100_000, []]),
    numbers,
)
users = st.one_of(st.sampled_from(["alice", "bob", "nobody", ""]), hostile_text, numbers)
photos = st.one_of(hostile_text, st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()), numbers,
                   st.sampled_from(["!!!!", "=" * 8, "QUJD" * 300_000]))
upsert_args = st.fixed_dictionaries({}, optional={
    "user": users, "template": templates, "photo": photos, "upload": users, "part": numbers | st.integers(-2, 500),
    "parts": numbers | st.integers(-2, 500), "replace": numbers, "force": numbers})
remove_args = st.fixed_dictionaries({}, optional={"user": users, "template": numbers | st.integers(-5, 10**12)})
upload_args = st.fixed_dictionaries({}, optional={
    "upload": users, "part": numbers | st.integers(-2, 500), "parts": numbers | st.integers(-2, 500), "data": photos})
JSON_TEXTS = [
    '{"user": "alice", "template": [NaN' + ", 0.1" * 127 + "]}",
    '{"user": "alice", "template": [Infinity' + ", 0.1" * 127 + "]}",
    '{"user": "alice", "user": "bob", "template": [' + ", ".join(["0.1"] * 128) + "]}",
    '{"user": "alice", "template": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"user": "\\ud800", "template": [' + ", ".join(["0.1"] * 128) + "]}",
    '{"user": "al\\u202eice", "photo": "' + "A" * 70_000 + '"}',
    '{"user": "alice", "template": [1e999' + ", 0.1" * 127 + "]}",
]
answers = st.one_of(  # what a broken or hostile enrolment process could print, as the daemon reads it
    st.fixed_dictionaries({"ok": st.sampled_from([True, 1, "true", None]),
                           "templates": st.lists(templates, max_size=3) | numbers}),
    st.fixed_dictionaries({"ok": st.just(False), "reason": numbers, "message": numbers, "photo": numbers}),
    st.dictionaries(hostile_text, numbers, max_size=4),
)


class Unit:
    """A real SQLite store with two users, the face commands on a registry, the enrolment process faked."""

    def __init__(self, tmp: Path) -> None:
        self.store = Store(tmp / "doorphoned.db")
        self.store.open()
        creds = CredentialStore(self.store, KEY)
        for user in ("alice", "bob"):
            creds.add_user(UserRecord(user, user), NOW)
        self.faces = FaceStore(self.store, KEY)
        self.faces.add("bob", [np.asarray(good_template(1), np.float32)], "local", NOW)
        self.answer: Any = {"ok": False, "reason": "no_face", "message": "no face"}
        config = FaceConfig(enabled=True)
        self.commands = FaceCommands(self.faces, FixedClock(NOW), lambda: __import__("zoneinfo").ZoneInfo("UTC"),
                                     lambda: config, tmp / "doorphoned.db", tmp / "device.key",
                                     lambda c, d, at: {"granted": False})

        async def fake_tool(op: str, user_id: str, data: list[bytes]) -> Any:
            return self.answer
        self.commands._run_tool = fake_tool  # type: ignore[method-assign]
        self.registry = Registry(self.commands.commands())

    def snapshot(self) -> tuple[int, int]:
        return self.faces.count(), self.faces.version()

    def run(self, interface: str, name: str, args: Any) -> Any:
        import asyncio

        caller = CLOUD if interface == "mqtt" else PEER
        command = self.registry.check(interface, name, args)  # type: ignore[arg-type]
        return asyncio.run(command.handler(args, caller))


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory):
    u = Unit(tmp_path_factory.mktemp("face-fuzz"))
    yield u
    u.store.close()


def _check(unit: Unit, interface: str, name: str, args: Any) -> None:
    before = unit.snapshot()
    try:
        result = unit.run(interface, name, args)
    except CommandError:
        assert unit.snapshot() == before  # refused: nothing changed
        return
    assert isinstance(result, dict)
    for user, _n in unit.faces.users():
        for template in unit.faces.templates_of(user):
            vector = np.asarray(template)
            assert vector.shape == (128,) and np.isfinite(vector).all()


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=upsert_args, answer=answers)
def test_face_upsert(unit: Unit, args: dict[str, Any], answer: Any) -> None:
    unit.answer = answer
    if unit.faces.count("alice") >= 8:
        unit.faces.remove("alice")
    _check(unit, "mqtt", "face.upsert", args)


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=remove_args)
def test_face_remove(unit: Unit, args: dict[str, Any]) -> None:
    _check(unit, "mqtt", "face.remove", args)
    if unit.faces.count("bob") == 0:
        unit.faces.add("bob", [np.asarray(good_template(1), np.float32)], "local", NOW)


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=upload_args, burst=st.integers(1, 20))
def test_face_upload_bursts_stay_bounded(unit: Unit, args: dict[str, Any], burst: int) -> None:
    for _ in range(burst):
        _check(unit, "socket", "face.upload", args)
    assert len(unit.commands.uploads) <= 8


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_hostile_json_tokens_are_refused_before_or_by_the_handler(unit: Unit, text: str) -> None:
    try:
        args = loads(text)
    except StrictJsonError:
        return  # the strict parser refuses it: nothing reaches the handler
    _check(unit, "mqtt", "face.upsert", args)


def _png(width: int, height: int, body: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


photo_bytes = st.one_of(
    st.binary(max_size=2000),
    st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.binary(max_size=200)).map(lambda t: _png(*t)),
    st.binary(max_size=500).map(lambda b: b"\xff\xd8\xff\xe0" + b),
    st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", _png(20000, 20000), _png(1, 1, b"\x00\x00\x00\x00"),
                     b"GIF89a" + b"\0" * 50]),
)


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=photo_bytes)
def test_photo_decoder(data: bytes) -> None:
    try:
        rgb = decode_photo(data)
    except PhotoError as exc:
        assert exc.reason in ("empty", "too_large", "format", "corrupt") and str(exc)
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and max(rgb.shape[:2]) <= 1600

