from __future__ import annotations

from doorphoned.readers.base import InView, RepeatFilter


def test_repeat_filter_drops_repeats_within_the_window():
    f = RepeatFilter(5)
    assert f.first("a", 0) and not f.first("a", 4.9) and f.first("b", 4.9) and f.first("a", 10.0)


def test_a_card_held_on_the_reader_is_one_presentation_however_long_it_stays():
    f = RepeatFilter(2)
    reads = [f.first("card", t * 1.0) for t in range(60)]  # read every second for a minute
    assert reads.count(True) == 1
    assert f.present(59.5) == 1 and f.present(61.0) == 0
    assert f.first("card", 61.0)  # taken away for 2 s and back: a new presentation


def test_a_code_left_in_view_counts_once_and_again_only_after_it_left():
    view = InView(1.0)
    assert view.update(frozenset({"A"}), 0.0) == ["A"]
    assert view.update(frozenset(), 10.0) == []  # gone from the frame ...
    assert view.update(frozenset({"A"}), 10.5) == []  # ... for less than gone_after: the same presentation
    assert view.present(10.6) == 1
    assert view.update(frozenset(), 20.0) == []
    assert view.present(20.5) == 1 and view.present(21.0) == 0
    assert view.update(frozenset({"A"}), 21.0) == ["A"]


def test_a_different_code_is_a_new_presentation_at_once():
    view = InView(5.0)
    assert view.update(frozenset({"A"}), 0.0) == ["A"]
    assert view.update(frozenset({"B"}), 0.1) == ["B"]
    assert view.update(frozenset({"A", "B"}), 0.2) == []
    assert view.update(frozenset({"C", "D"}), 0.3) == ["C", "D"]
