from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from doorphoned.core.lockout import LockoutPolicy, LockoutState, record_failure, record_success

POLICY = LockoutPolicy(failures=5, window=60, first=30, maximum=900)


def fail(state, *times):
    for t in times:
        state = record_failure(state, t, POLICY)
    return state


def test_five_failures_within_a_minute_lock_for_30_s():
    state = fail(LockoutState(), 0, 10, 20, 30)
    assert not state.is_locked(31)
    state = fail(state, 40)
    assert state.is_locked(40) and state.is_locked(69.9) and not state.is_locked(70)


def test_failures_spread_over_more_than_the_window_do_not_lock():
    state = fail(LockoutState(), 0, 20, 40, 61, 62)
    assert not state.is_locked(62)


def test_lockouts_double_up_to_fifteen_minutes():
    state, t, durations = LockoutState(), 0.0, []
    for _ in range(8):
        state = fail(state, *(t + i for i in range(5)))
        durations.append(state.locked_until - (t + 4))
        t = state.locked_until + 1
    assert durations == [30, 60, 120, 240, 480, 900, 900, 900]


def test_a_correct_pin_or_a_quiet_period_ends_the_streak():
    state = fail(LockoutState(), 0, 1, 2, 3, 4)
    assert record_success(state).level == 0
    later = fail(state, *(34 + 900 + i for i in range(5)))
    assert later.locked_until - (34 + 904) == 30


def test_state_survives_serialisation():
    state = fail(LockoutState(), 0, 1, 2, 3, 4)
    assert LockoutState.from_dict(state.as_dict()) == state


@given(st.lists(st.floats(min_value=0, max_value=5), max_size=80))
def test_every_fifth_quick_failure_locks_and_locks_never_shrink(gaps):
    """Fast guessing: at most 5 tries per lockout earned, and each lockout at least as long as the last."""
    state, t, attempts, lockouts = LockoutState(), 0.0, 0, []
    for gap in gaps:
        t += gap
        if state.is_locked(t):
            continue
        attempts += 1
        new = record_failure(state, t, POLICY)
        if new.is_locked(t):
            lockouts.append(new.locked_until - t)
        state = new
    assert attempts <= POLICY.failures * (len(lockouts) + 1)
    assert lockouts == sorted(lockouts)
