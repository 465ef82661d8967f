from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doorphoned.access.credentials import (
    check_private_pin,
    encode_qr,
    is_trivial_pin,
    new_temp_pin,
    parse_qr,
)
from doorphoned.core.presentations import CredentialFormatError, normalise_card_uid


def test_qr_round_trip_and_distinct_from_a_typed_pin():
    text = encode_qr("tk-abc_1", "48151623")
    assert text.startswith("DPK1:tk-abc_1:48151623:")
    assert parse_qr(text) == ("tk-abc_1", "48151623")
    with pytest.raises(CredentialFormatError, match="another format"):
        parse_qr("48151623")


@pytest.mark.parametrize(("payload", "message"), [
    ("https://example.com/x", "another format"),
    ("WIFI:S:office;T:WPA;P:secret;;", "another format"),
    ("DPK2:tk-1:48151623:abcdef01", "version 2 is not supported"),
    ("DPK1:tk-1:4815162:abcdef01", "malformed"),
    ("DPK1:tk 1:48151623:abcdef01", "malformed"),
    ("DPK1:tk-1:48151623:abcdef01", "check digits"),
    ("\x00\x01binary", "binary"),
    ("DPK1:" + "a" * 10_000, "too long"),
])
def test_bad_qr_payloads_are_refused_with_a_reason(payload, message):
    with pytest.raises(CredentialFormatError, match=message):
        parse_qr(payload)


@given(st.text(max_size=200))
def test_parse_qr_never_crashes(text):
    try:
        key_id, pin = parse_qr(text)
    except CredentialFormatError:
        return
    assert encode_qr(key_id, pin) == text


@pytest.mark.parametrize("pin", ["1234", "0000", "98765", "8901", "11111111", "3210"])
def test_trivial_pins_are_refused(pin):
    assert is_trivial_pin(pin)
    with pytest.raises(CredentialFormatError, match="too easy"):
        check_private_pin(pin)


@pytest.mark.parametrize(("pin", "message"), [("123", "4-8 digits"), ("123456789", "4-8 digits"),
                                               ("12a4", "digits only"), ("１２３４", "digits only")])
def test_bad_pins(pin, message):
    with pytest.raises(CredentialFormatError, match=message):
        check_private_pin(pin)


def test_temp_pins_are_eight_random_digits():
    pins = {new_temp_pin() for _ in range(200)}
    assert all(len(p) == 8 and p.isdigit() and not is_trivial_pin(p) for p in pins)
    assert len(pins) > 190


@pytest.mark.parametrize(("text", "uid"), [("04a1b2c3", "04A1B2C3"), ("04:A1:B2:C3:D4:E5:F6", "04A1B2C3D4E5F6"),
                                           (" 04-a1-b2-c3 ", "04A1B2C3")])
def test_card_uids_normalise(text, uid):
    assert normalise_card_uid(text) == uid


@pytest.mark.parametrize("text", ["", "04A1B2", "XYZ12345", "04A1B2C3D4", "0" * 22, "04A1B2C"])
def test_bad_card_uids(text):
    with pytest.raises(CredentialFormatError):
        normalise_card_uid(text)
