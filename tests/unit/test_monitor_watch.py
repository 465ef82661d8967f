"""The stream's stall watchdog as pure logic, with the clock passed in (the real stall is provoked in
tests/e2e/test_monitor_stall.py)."""

from __future__ import annotations

from doorphoned.camera.monitor_watch import KEY, RESTART, StallWatch


def test_flowing_packets_or_nobody_playing_is_never_a_stall():
    watch = StallWatch(stall_seconds=3, restart_seconds=6)
    assert all(watch.tick(float(t), packets=t * 10, playing=True) is None for t in range(60))
    assert all(watch.tick(float(t), packets=0, playing=False) is None for t in range(60, 120))
    assert watch.stalls == watch.restarts == 0 and watch.quiet_for(120.0) == 0.0


def test_a_quiet_stream_gets_a_key_frame_then_a_restart_and_a_restart_that_did_not_take_starts_over():
    watch = StallWatch(stall_seconds=3, restart_seconds=6)
    actions = {t: watch.tick(float(t), packets=5, playing=True) for t in range(20)}
    assert [t for t, action in actions.items() if action == KEY] == [3, 9, 15]
    assert [t for t, action in actions.items() if action == RESTART] == [6, 12, 18]
    assert watch.stalls == 3 and watch.restarts == 3


def test_packets_again_or_the_viewers_gone_end_the_quiet_spell():
    watch = StallWatch(stall_seconds=3, restart_seconds=6)
    for t in range(5):
        watch.tick(float(t), packets=5, playing=True)
    assert watch.stalls == 1 and watch.quiet_for(5.0) == 5.0
    assert watch.tick(5.0, packets=6, playing=True) is None  # a packet: the quiet restarts from here
    assert [watch.tick(float(t), packets=6, playing=True) for t in range(6, 9)] == [None, None, KEY]
    assert watch.tick(9.0, packets=6, playing=False) is None and watch.quiet_for(9.0) == 0.0
    assert watch.tick(10.0, packets=6, playing=True) is None  # a new viewer's wait starts at its PLAY
    assert watch.tick(12.9, packets=6, playing=True) is None
    assert watch.tick(13.0, packets=6, playing=True) == KEY and watch.restarts == 0
