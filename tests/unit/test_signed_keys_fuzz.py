"""Property fuzz of the signed-key format and the revocation / signing-key arguments, in-process (pure code).

`make test` runs a fast pass; `make fuzz-signedkeys` runs >= 10,000 cases per interface (FUZZ_CASES). The hostile
shapes: mutations of a real signed key at the byte level (re-encoded, so they pass the base32 gate and reach the
payload parser and the signature check) and at the text level, random prefixes and versions, NUL, bidi
controls, lone surrogates, huge strings, wrong JSON types, NaN/Infinity, duplicate keys and deep nesting in the
JSON arguments. Invariant: the parser answers a value or CredentialFormatError, the decision never raises and
grants nothing but the texts the trusted key signed, the argument parsers answer a value or CommandError.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.access.decide import Reason, decide
from doorphoned.access.signedkeys import Terms, parse_signed, sign
from doorphoned.access.sync import ItemParser
from doorphoned.core.commands import CommandError
from doorphoned.core.presentations import CredentialFormatError, QrScan
from doorphoned.core.schedule import WeeklyWindow
from doorphoned.core.strictjson import loads
from tests.fuzz import HOSTILE_CHARS, fuzz_cases, hostile_numbers, hostile_text
from tests.unit.test_signed_keys import CLOUD, OTHER, SignedView

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BASE = Terms("tk-fuzz", "site-a", frozenset({1, 2}), NOW - timedelta(days=1), NOW + timedelta(days=1), "never", 3,
             None, ("u-a",), "Fuzz")
VALID = sign(BASE, CLOUD)
WEEKLY = sign(Terms("tk-w", "site-a", frozenset({1}), NOW - timedelta(days=1), NOW + timedelta(days=9), "weekly",
                    None, WeeklyWindow(frozenset({0, 3}), 600, 60), (), ""), CLOUD)
GENUINE = {VALID, WEEKLY}
CASES = fuzz_cases(300)
FUZZ = settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))


def _blob(text: str) -> bytes:
    body = text.split(":", 1)[1]
    return base64.b32decode(body + "=" * (-len(body) % 8))


def _text(blob: bytes, prefix: str = "DPS1:") -> str:
    return prefix + base64.b32encode(blob).decode().rstrip("=")


def _mutate(blob: bytes, kind: int, at: int, value: int, size: int) -> bytes:
    at %= len(blob) + 1
    if kind == 0:
        return blob[:at] + bytes([value]) + blob[at + 1:]  # replace a byte
    if kind == 1:
        return blob[:at] + bytes([value]) * size + blob[at:]  # insert bytes
    if kind == 2:
        return blob[:at] + blob[at + size:]  # delete bytes
    if kind == 3:
        return blob[:at]  # cut short
    if kind == 4:
        return blob + bytes([value]) * size  # trailing bytes
    return bytes(b ^ (1 << (value % 8)) if i == at else b for i, b in enumerate(blob))  # one bit


byte_mutations = st.builds(lambda base, k, a, v, s: _text(_mutate(_blob(base), k, a, v, s)),
                           st.sampled_from(sorted(GENUINE)), st.integers(0, 5), st.integers(0, 400),
                           st.integers(0, 255), st.integers(1, 300))
text_mutations = st.builds(
    lambda base, at, piece, cut: base[:at % len(base)] + piece + base[at % len(base) + cut:],
    st.sampled_from(sorted(GENUINE)), st.integers(0, 400),
    st.one_of(st.sampled_from(HOSTILE_CHARS), st.text(max_size=3), st.sampled_from(["a", "=", "1", "0", "8", " "])),
    st.integers(0, 3))
prefixes = st.builds(lambda p, body: p + body,
                     st.sampled_from(["DPS1:", "DPS0:", "DPS2:", "DPS01:", "DPS999:", "DPS1", "DPS", "dps1:",
                                      "DPS1::", "DPS-1:", "DPS١:", "DPK1:"]),
                     st.one_of(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", max_size=400), hostile_text))
huge = st.builds(lambda n, c: "DPS1:" + c * n, st.integers(500, 70_000), st.sampled_from(["A", "7", "\x00", "é"]))
texts = st.one_of(byte_mutations, byte_mutations, text_mutations, prefixes, huge, hostile_text)


@FUZZ
@given(texts)
def test_hostile_texts_are_refused_with_a_reason_and_grant_nothing(text):
    try:
        parse_signed(text)
    except CredentialFormatError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 200
    decision = decide(QrScan(text), 1, NOW, SignedView())
    if text in GENUINE:
        return
    assert not decision.granted, text
    assert decision.reason in (Reason.MALFORMED, Reason.BAD_SIGNATURE, Reason.UNKNOWN), (text, decision)
    assert len(text) < 12 or text not in decision.detail  # never echoed back


recipients = st.lists(st.from_regex(r"\A[A-Za-z0-9_.@-]{1,12}\Z"), max_size=8, unique=True)
windows = st.tuples(st.frozensets(st.integers(0, 6), min_size=1), st.integers(0, 1439), st.integers(1, 1440)) \
    .filter(lambda w: w[1] != w[2]).map(lambda w: WeeklyWindow(*w))


@st.composite
def terms(draw: st.DrawFn) -> Terms:
    repeat = draw(st.sampled_from(["never", "daily", "weekly"]))
    start = draw(st.integers(0, 2**32 - 2))
    window = None if repeat == "never" else draw(windows)
    if repeat == "daily" and window is not None:
        window = WeeklyWindow(frozenset(range(7)), window.start, window.end)
    return Terms(draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,40}\Z")), draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")),
                 draw(st.frozensets(st.integers(1, 16), min_size=1)), datetime.fromtimestamp(start, UTC),
                 datetime.fromtimestamp(draw(st.integers(start + 1, 2**32 - 1)), UTC), repeat,
                 draw(st.integers(1, 100)) if repeat == "never" else None, window, tuple(draw(recipients)),
                 draw(st.text(max_size=10).filter(lambda n: n.isprintable() and len(n.encode()) <= 32)))


@FUZZ
@given(terms(), st.booleans())
def test_any_valid_terms_round_trip_and_only_the_trusted_key_opens(key_terms, trusted):
    text = sign(key_terms, CLOUD if trusted else OTHER)
    assert parse_signed(text).terms == key_terms
    assert len(text) < 1200
    decision = decide(QrScan(text), min(key_terms.doors), key_terms.start, SignedView(doors=frozenset(range(1, 17))))
    if not trusted:
        assert decision.reason is Reason.BAD_SIGNATURE
    elif key_terms.scope != "site-a":
        assert decision.reason is Reason.WRONG_SITE


# ---------------------------------------------------------------- the JSON arguments (tempkey.revoke, sync)

PARSER = ItemParser(frozenset({1, 2}), ZoneInfo("UTC"))
PUBLIC_PEM = CLOUD.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()
OTHER_CURVE = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text,
                    st.sampled_from(["tk-1", "2026-12-24T18:00", "9999-12-31T23:59+14:00", "0001-01-01", PUBLIC_PEM,
                                     OTHER_CURVE, PUBLIC_PEM.replace("A", "B", 1), "-----BEGIN PUBLIC KEY-----"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["key_id", "end", "x"]) | st.text(max_size=4), inner,
                                        max_size=3), max_leaves=8)


def _raw(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"


json_args = st.one_of(
    st.builds(lambda k, e: _raw([("key_id", json.dumps(k)), ("end", json.dumps(e))]), values, values),
    st.builds(lambda t: _raw([("key_id", '"tk-1"'), ("end", t)]),
              st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "[" * 3000 + "]" * 3000])),
    st.builds(lambda: _raw([("key_id", '"tk-1"'), ("key_id", '"tk-2"'), ("end", '"2026-12-24T18:00"')])),
)


@FUZZ
@given(json_args)
def test_revocation_arguments_are_a_revocation_or_a_command_error(raw):
    try:
        args = loads(raw)
    except ValueError:
        return  # the command envelope refuses it before any handler (strict JSON)
    try:
        revocation = PARSER.revocation(args)
    except CommandError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert 0 < revocation.until < 2**32 and revocation.key_id == args["key_id"]


@FUZZ
@given(st.one_of(values, st.lists(values, max_size=9)))
def test_signing_keys_and_revocation_lists_are_values_or_command_errors(value):
    for parse in (PARSER.signing_keys, lambda v: PARSER.revocations(v, "revoked")):
        try:
            result = parse(value)
        except CommandError as exc:
            assert str(exc) and "\n" not in str(exc)
            continue
        assert isinstance(result, (dict, list))


# Found by the fuzz: a key whose algorithm OID is unknown raised UnsupportedAlgorithm (no ValueError) out of the
# sync command and the config check.
UNKNOWN_ALGORITHM = PUBLIC_PEM.replace("MFkwEwYHKoZIzj0CAQ", "MFkwEwYHKoZIzj0CBQ")


def test_only_p256_public_keys_are_trusted():
    assert list(PARSER.signing_keys([PUBLIC_PEM]).values()) == [PUBLIC_PEM]
    assert UNKNOWN_ALGORITHM != PUBLIC_PEM
    for bad in ([OTHER_CURVE], [PUBLIC_PEM] * 9, ["x"], [1], [UNKNOWN_ALGORITHM]):
        with pytest.raises(CommandError):
            PARSER.signing_keys(bad)
