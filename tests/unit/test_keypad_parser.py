from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from doorphoned.readers.keypad import KeypadParser, Submitted


def parser():
    return KeypadParser(max_length=16, digit_timeout=5)


def test_digits_then_hash_submit():
    assert parser().feed(b"2580#", 0) == [Submitted("2580")]


def test_star_clears_and_crlf_is_ignored():
    p = parser()
    assert p.feed(b"99*25\r\n80#", 0) == [Submitted("2580")]


def test_several_entries_in_one_read():
    assert parser().feed(b"1111#2222#", 0) == [Submitted("1111"), Submitted("2222")]


def test_empty_submit_is_ignored():
    assert parser().feed(b"#", 0) == []


def test_inter_digit_timeout_clears_half_typed_entry():
    p = parser()
    p.feed(b"25", 0)
    assert p.feed(b"80#", 6) == [Submitted("80")]


def test_too_long_and_non_digit_entries_are_spoiled():
    assert parser().feed(b"1" * 17 + b"#", 0) == [Submitted("", "entry longer than 16 keys")]
    assert parser().feed(b"12A4#", 0) == [Submitted("", "entry contains a key that is not a digit")]
    assert parser().feed(b"12\xff4#", 0) == [Submitted("", "entry contains a key that is not a digit")]
    p = parser()
    p.feed(b"12A", 0)
    assert p.feed(b"*2580#", 0) == [Submitted("2580")]  # * recovers a spoiled entry


@given(st.binary(max_size=300))
def test_never_emits_more_than_max_length_digits(data):
    for entry in parser().feed(data, 0):
        assert entry.problem or (entry.digits.isdigit() and len(entry.digits) <= 16)

