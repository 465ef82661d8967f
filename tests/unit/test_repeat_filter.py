from __future__ import annotations

from doorphoned.readers.base import RepeatFilter


def test_repeat_filter_drops_repeats_within_the_window():
    f = RepeatFilter(5)
    assert f.first("a", 0) and not f.first("a", 4.9) and f.first("b", 4.9) and f.first("a", 5.0)
