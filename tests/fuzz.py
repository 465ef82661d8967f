"""Shared pieces of the property fuzz tests: how many cases, and the hostile shapes every generator mixes in.

`make test` runs a fast pass; `make fuzz-local` sets FUZZ_CASES=10000 for the full one.
"""

from __future__ import annotations

import os

from hypothesis import strategies as st


def fuzz_cases(fast: int) -> int:
    """``FUZZ_CASES`` when set (the full run), else ``fast`` (the share of `make test`)."""
    return int(os.environ.get("FUZZ_CASES", fast))


# Text that has broken parsers and terminals: NUL, C0 controls, bidi overrides and isolates, a lone
# surrogate, a BOM, a line separator, non-BMP characters.
HOSTILE_CHARS = ["\x00", "\x01", "\x1b[2J", "\r", "\n", "\t", "\x7f", "\u202e", "\u2066", "\u200f", "\ud800",
                 "\udfff", "\ufeff", "\u2028", "\U0001f6aa", "\u0000\u202e"]

hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(HOSTILE_CHARS) | st.text(max_size=5), max_size=8).map("".join),
    st.integers(1, 70_000).map(lambda n: "A" * n),  # huge strings, over every limit
)

hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324]),
    st.integers(-(2**80), 2**80),
    st.sampled_from([10**400, -(10**400)]),
)
