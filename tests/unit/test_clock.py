"""The manual clock's timers behave like the loop's: deadline order, cancellation, sleeping tasks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from doorphoned.core.clock import FixedClock, SystemClock, wait_event

START = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_timers_fire_in_deadline_order_each_at_its_own_time():
    clock = FixedClock(START)
    fired: list[tuple[str, float]] = []
    clock.call_later(2, lambda: fired.append(("b", clock.monotonic())))
    clock.call_later(1, lambda: fired.append(("a", clock.monotonic())))
    clock.call_later(2, lambda: fired.append(("c", clock.monotonic())))  # same deadline: set later, runs later
    cancelled = clock.call_later(1.5, lambda: fired.append(("x", clock.monotonic())))
    cancelled.cancel()
    clock.advance(1.9)
    assert fired == [("a", 1001.0)]
    clock.advance(0.1)
    assert fired == [("a", 1001.0), ("b", 1002.0), ("c", 1002.0)]
    assert clock.now() == START + timedelta(seconds=2) and clock.pending() == []


def test_a_timer_set_by_a_timer_fires_within_the_same_advance():
    clock = FixedClock(START)
    seen: list[float] = []

    def again() -> None:
        seen.append(clock.monotonic())
        if len(seen) < 3:
            clock.call_later(1, again)

    clock.call_later(1, again)
    clock.advance(10)
    assert seen == [1001.0, 1002.0, 1003.0]


def test_a_sleeping_loop_wakes_once_per_period_with_run_for():
    async def scenario() -> list[float]:
        clock = FixedClock(START)
        woke: list[float] = []

        async def every_second() -> None:
            while True:
                await clock.sleep(1)
                woke.append(clock.monotonic())

        task = asyncio.create_task(every_second())
        await clock.run_for(3.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert clock.pending() == []  # the cancelled sleep took its timer along
        return woke

    assert asyncio.run(scenario()) == [1001.0, 1002.0, 1003.0]


def test_wait_event_returns_when_set_or_at_the_timeout():
    async def scenario() -> None:
        clock = FixedClock(START)
        event = asyncio.Event()
        waiting = asyncio.create_task(wait_event(clock, event, 5))
        await clock.run_for(4.9)
        assert not waiting.done()
        await clock.run_for(0.1)
        assert waiting.done() and waiting.result() is False
        waiting = asyncio.create_task(wait_event(clock, event, 5))
        await clock.run_for(1)
        event.set()
        assert await waiting is True
        assert clock.pending() == []

    asyncio.run(scenario())


def test_the_system_clock_puts_timers_on_the_loop():
    async def scenario() -> None:
        clock = SystemClock()
        fired = asyncio.Event()
        timer = clock.call_later(0, fired.set)
        assert abs(timer.when() - clock.monotonic()) < 5
        await asyncio.wait_for(fired.wait(), 30)
        cancelled = clock.call_later(0, fired.clear)
        cancelled.cancel()
        await clock.sleep(0)
        assert fired.is_set() and cancelled.cancelled()

    asyncio.run(scenario())
