from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from doorphoned.relay.watch import DoorWatch


def test_opening_within_a_grant_is_not_forced():
    w = DoorWatch(held_open_after=30, grace=2)
    w.sensor(0, False)
    w.authorise(10, 3)
    assert w.sensor(12, True) == []
    assert w.active == set()


def test_opening_without_grant_raises_forced_open_and_closing_clears_it():
    w = DoorWatch(held_open_after=30, grace=2)
    w.sensor(0, False)
    raised = w.sensor(5, True)
    assert [(a.kind, a.active) for a in raised] == [("forced_open", True)]
    cleared = w.sensor(6, False)
    assert [(a.kind, a.active) for a in cleared] == [("forced_open", False)]


def test_grace_after_relock():
    w = DoorWatch(held_open_after=0, grace=2)
    w.sensor(0, False)
    w.lock_changed(10, True)
    w.lock_changed(13, False)
    assert w.sensor(14.9, True) == []
    w.sensor(15, False)
    assert [a.kind for a in w.sensor(15.1, True)] == ["forced_open"]


def test_open_at_start_is_not_an_intrusion():
    w = DoorWatch(held_open_after=30, grace=0)
    assert w.sensor(0, True) == []
    assert w.next_deadline() == 30


def test_held_open_fires_once_at_the_deadline():
    w = DoorWatch(held_open_after=5, grace=2)
    w.sensor(0, False)
    w.authorise(0, 3)
    w.sensor(1, True)
    assert w.next_deadline() == 6
    assert w.tick(5.99) == []
    assert [(a.kind, a.active) for a in w.tick(6)] == [("held_open", True)]
    assert w.tick(100) == []
    assert w.next_deadline() is None
    assert [(a.kind, a.active) for a in w.sensor(101, False)] == [("held_open", False)]


def test_held_open_disabled_with_zero():
    w = DoorWatch(held_open_after=0, grace=2)
    w.sensor(0, False)
    w.authorise(0, 3)
    w.sensor(1, True)
    assert w.next_deadline() is None


@given(st.lists(st.tuples(st.sampled_from(["open", "close", "grant", "unlock", "lock", "tick"]),
                          st.floats(min_value=0, max_value=50)), max_size=40))
def test_alarms_only_while_open_and_cleared_on_close(steps):
    """Whatever happens, a closed door carries no alarm, and every raise is matched by one clear."""
    w = DoorWatch(held_open_after=5, grace=1)
    now = 0.0
    raised: dict[str, int] = {}
    for action, dt in steps:
        now += dt
        changes = []
        if action in ("open", "close"):
            changes = w.sensor(now, action == "open")
        elif action == "grant":
            w.authorise(now, 3)
        elif action in ("unlock", "lock"):
            w.lock_changed(now, action == "unlock")
        else:
            changes = w.tick(now)
        for change in changes:
            raised[change.kind] = raised.get(change.kind, 0) + (1 if change.active else -1)
            assert raised[change.kind] in (0, 1)
        if w.is_open is False:
            assert w.active == set()
    assert {k for k, v in raised.items() if v} == w.active
