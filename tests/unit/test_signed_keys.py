"""Offline-signed temp keys, pure: the format (canonical, strict), the signature, and the access core's rules."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from doorphoned.access.decide import Reason, TempKeyRecord, decide
from doorphoned.access.signedkeys import (
    _ORDER,
    SIG_LEN,
    Terms,
    Trust,
    TrustedKey,
    encode_payload,
    encode_text,
    fingerprint,
    parse_signed,
    sign,
)
from doorphoned.core.presentations import CredentialFormatError, QrScan
from doorphoned.core.schedule import WeeklyWindow
from tests.unit.test_access import View

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday (the pure core takes any instant)
CLOUD = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
TERMS = Terms("tk-courier-1", "site-a", frozenset({1}), NOW - timedelta(hours=1), NOW + timedelta(days=1),
              "never", 2, None, (), "Courier")


@dataclass
class SignedView(View):
    trusted: Trust = field(default_factory=lambda: Trust((TrustedKey("config 1", CLOUD.public_key()),),
                                                         frozenset({"site-a", "unit-7"})))
    revocations: set[str] = field(default_factory=set)
    stored: dict[str, TempKeyRecord] = field(default_factory=dict)
    signed_uses: dict[tuple[str, int], int] = field(default_factory=dict)

    def trust(self):
        return self.trusted

    def revoked(self, key_id):
        return key_id in self.revocations

    def key_by_id(self, key_id):
        return self.stored.get(key_id)

    def signed_key_uses(self, key_id, door):
        return self.signed_uses.get((key_id, door), 0)


def check(text: str, door: int = 1, at: datetime = NOW, view: SignedView | None = None):
    return decide(QrScan(text), door, at, view or SignedView())


# ---------------------------------------------------------------- format


def test_a_signed_key_round_trips_and_one_key_has_one_text():
    text = sign(TERMS, CLOUD)
    assert text.startswith("DPS1:") and len(text) < 200
    assert sign(TERMS, CLOUD) == text  # deterministic (RFC 6979) and low-s: one key, one text
    parsed = parse_signed(text)
    assert parsed.terms == TERMS
    assert parsed.signer == fingerprint(CLOUD.public_key())


def test_every_repeat_and_recipients_round_trip():
    weekly = replace(TERMS, repeat="weekly", count=None, window=WeeklyWindow(frozenset({0, 2, 4}), 8 * 60, 18 * 60),
                     recipients=("u-alice", "u.bob@x"))
    daily = replace(TERMS, repeat="daily", count=None, window=WeeklyWindow(frozenset(range(7)), 22 * 60, 6 * 60))
    for terms in (weekly, daily):
        assert parse_signed(sign(terms, CLOUD)).terms == terms


def test_the_text_is_in_the_qr_alphanumeric_alphabet():
    text = sign(TERMS, CLOUD)
    assert set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


@pytest.mark.parametrize("bad", [
    replace(TERMS, doors=frozenset()), replace(TERMS, doors=frozenset({17})), replace(TERMS, count=0),
    replace(TERMS, count=101), replace(TERMS, repeat="daily"), replace(TERMS, key_id="a b"),
    replace(TERMS, scope=""), replace(TERMS, name="x\u202e"), replace(TERMS, name="é" * 17),
    replace(TERMS, end=TERMS.start), replace(TERMS, recipients=("a", "a")),
    replace(TERMS, repeat="daily", count=None, window=WeeklyWindow(frozenset({0}), 0, 60)),
])
def test_terms_out_of_bounds_are_never_signed(bad):
    with pytest.raises(ValueError):
        sign(bad, CLOUD)


def _blob(text: str) -> bytes:
    body = text.split(":", 1)[1]
    return base64.b32decode(body + "=" * (-len(body) % 8))


@pytest.mark.parametrize(("text", "says"), [
    ("DPS2:AAAA", "version 2 is not supported"),
    ("DPS1:", "not base32"),
    ("DPS1:aeaa", "not base32"),
    ("DPS1:AEAA====", "not base32"),
    ("DPS1:" + "A" * 2000, "too long"),
    ("DPSX:AAAA", "no DPS<version>: prefix"),
    ("DPS1:AEAQ", "too short"),
])
def test_malformed_texts_are_refused_with_a_reason(text, says):
    with pytest.raises(CredentialFormatError, match=says):
        parse_signed(text)


def test_a_second_encoding_of_the_same_bytes_is_refused():
    text = sign(TERMS, CLOUD)
    body = text.split(":", 1)[1]
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".index(body[-1])
    twin = text[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[last ^ 1]  # only the unused trailing bit differs
    if _blob(twin) == _blob(text):
        with pytest.raises(CredentialFormatError, match="not canonical"):
            parse_signed(twin)


def test_the_high_s_twin_of_a_signature_is_refused():
    blob = _blob(sign(TERMS, CLOUD))
    s = int.from_bytes(blob[-32:])
    twin = encode_text(blob[:-32] + (_ORDER - s).to_bytes(32))
    with pytest.raises(CredentialFormatError, match="low-s"):
        parse_signed(twin)


def test_trailing_bytes_and_reserved_bits_are_refused():
    blob = _blob(sign(TERMS, CLOUD))
    payload, signature = blob[:-SIG_LEN], blob[-SIG_LEN:]
    with pytest.raises(CredentialFormatError):
        parse_signed(encode_text(payload + b"\x00" + signature))
    with pytest.raises(CredentialFormatError, match="reserved"):
        parse_signed(encode_text(payload[:1] + bytes([payload[1] | 0x80]) + payload[2:] + signature))


def test_a_payload_signed_by_hand_but_not_canonical_is_refused():
    payload = encode_payload(TERMS, fingerprint(CLOUD.public_key()))
    assert payload[-len("Courier") - 1] == len("Courier")
    with pytest.raises(CredentialFormatError):
        parse_signed(encode_text(payload[:-8] + b"\x07Courie\x00" + b"\x01" * SIG_LEN))


# ---------------------------------------------------------------- decisions


def test_a_valid_signed_key_opens_offline_with_the_synced_rules():
    decision = check(sign(TERMS, CLOUD))
    assert decision.granted, decision
    assert decision.key is not None and decision.key.signed_by == "config 1"
    assert decision.subject == "Courier (tk-courier-1)"
    assert check(sign(TERMS, CLOUD), door=2).reason is Reason.DOOR_NOT_ALLOWED
    assert check(sign(TERMS, CLOUD), at=TERMS.start - timedelta(seconds=1)).reason is Reason.NOT_YET_VALID
    assert check(sign(TERMS, CLOUD), at=TERMS.end).reason is Reason.EXPIRED
    used = SignedView(signed_uses={("tk-courier-1", 1): 2})
    assert check(sign(TERMS, CLOUD), view=used).reason is Reason.USES_EXHAUSTED


def test_every_single_byte_change_is_refused_and_never_grants():
    blob = _blob(sign(TERMS, CLOUD))
    for index in range(len(blob)):
        altered = bytearray(blob)
        altered[index] ^= 0x01
        decision = check(encode_text(bytes(altered)))
        assert not decision.granted
        assert decision.reason in (Reason.BAD_SIGNATURE, Reason.MALFORMED), (index, decision)


def test_signature_by_an_untrusted_key_or_no_trust_is_refused():
    assert check(sign(TERMS, OTHER)).reason is Reason.BAD_SIGNATURE
    assert "does not trust" in check(sign(TERMS, OTHER)).detail
    nobody = SignedView(trusted=Trust(scopes=frozenset({"site-a"})))
    assert check(sign(TERMS, CLOUD), view=nobody).reason is Reason.NO_TRUSTED_KEY


def test_rotation_both_keys_trusted_then_the_old_one_dropped():
    both = SignedView(trusted=Trust((TrustedKey("old", CLOUD.public_key()), TrustedKey("new", OTHER.public_key())),
                                    frozenset({"site-a"})))
    assert check(sign(TERMS, CLOUD), view=both).key.signed_by == "old"
    assert check(sign(TERMS, OTHER), view=both).key.signed_by == "new"
    new_only = SignedView(trusted=Trust((TrustedKey("new", OTHER.public_key()),), frozenset({"site-a"})))
    assert check(sign(TERMS, CLOUD), view=new_only).reason is Reason.BAD_SIGNATURE


def test_a_key_for_another_site_is_refused_and_a_unit_scope_opens():
    assert check(sign(replace(TERMS, scope="site-b"), CLOUD)).reason is Reason.WRONG_SITE
    assert check(sign(replace(TERMS, scope="unit-7"), CLOUD)).granted


def test_a_revoked_key_is_refused():
    decision = check(sign(TERMS, CLOUD), view=SignedView(revocations={"tk-courier-1"}))
    assert decision.reason is Reason.REVOKED


def test_a_synced_key_with_the_same_id_wins():
    synced = TempKeyRecord("tk-courier-1", "Courier (synced)", frozenset({2}), "never", TERMS.start, TERMS.end,
                           each_door_counts=1)
    view = SignedView(stored={"tk-courier-1": synced}, uses={("tk-courier-1", 2): 1})
    assert check(sign(TERMS, CLOUD), door=1, view=view).reason is Reason.DOOR_NOT_ALLOWED  # the synced doors
    assert check(sign(TERMS, CLOUD), door=2, view=view).reason is Reason.USES_EXHAUSTED  # one count for both forms
    fresh = SignedView(stored={"tk-courier-1": synced})
    granted = check(sign(TERMS, CLOUD), door=2, view=fresh)
    assert granted.granted and granted.key is not None and granted.key.signed_by is None


def test_a_plain_dpk1_code_still_goes_the_synced_way():
    assert check("DPK1:tk-1:48151623:00000000").reason is Reason.MALFORMED  # check digits, not a signature


def test_the_config_check_names_a_bad_trusted_key(tmp_path):
    from doorphoned.access.config import _check_public_keys
    from tests.unit.test_signed_keys_fuzz import OTHER_CURVE, PUBLIC_PEM, UNKNOWN_ALGORITHM

    pem = tmp_path / "cloud.pub.pem"
    pem.write_text(PUBLIC_PEM)
    assert _check_public_keys((str(pem), PUBLIC_PEM)) is None
    assert "key 2: cannot read" in _check_public_keys((str(pem), str(tmp_path / "missing.pem")))
    assert "key 1: not a P-256" in _check_public_keys((OTHER_CURVE,))
    assert "key 1: not a PEM public key" in _check_public_keys((UNKNOWN_ALGORITHM,))
    assert "at most 8" in _check_public_keys((PUBLIC_PEM,) * 9)
