"""The loop-lag probe that bench/cloud.py reads: it must see a loop that was held, and by whom."""

from __future__ import annotations

import asyncio
import gc
import time

from doorphoned.core.loopprobe import LoopProbe


async def _held(probe: LoopProbe, hold: float, busy: bool) -> dict[str, object]:
    probe.start()
    await asyncio.sleep(0.05)  # a few normal wake-ups first
    if busy:
        until = time.thread_time() + hold
        while time.thread_time() < until:  # the loop's own work
            pass
    else:
        time.sleep(hold)  # the loop blocked, not computing (an fsync, say)
    await asyncio.sleep(0.01)
    report = probe.report()
    await probe.close()
    return report


def test_a_loop_held_by_its_own_work_shows_as_lag_and_as_cpu():
    report = asyncio.run(_held(LoopProbe(), 0.06, busy=True))
    assert report["probe"] is True
    assert report["max_lag_ms"] >= 55
    assert report["max_cpu_ms"] >= 55
    assert report["over_ms"]["50"] >= 1


def test_a_blocked_loop_shows_as_lag_but_not_as_cpu():
    report = asyncio.run(_held(LoopProbe(), 0.06, busy=False))
    assert report["max_lag_ms"] >= 55
    assert report["max_cpu_ms"] < 30


def test_garbage_collections_are_timed_while_it_runs_only():
    async def main() -> tuple[dict[str, object], dict[str, object]]:
        probe = LoopProbe()
        probe.start()
        junk = [[i] for i in range(200_000)]
        gc.collect()
        running = probe.report()
        await probe.close()
        assert probe._on_gc not in gc.callbacks
        del junk
        return running, probe.report()

    running, stopped = asyncio.run(main())
    assert running["max_gc_ms"] > 0
    assert stopped["probe"] is False
