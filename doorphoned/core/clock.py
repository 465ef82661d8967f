"""Injectable time and timers.

Everything that asks "what time is it" or "call me in N seconds" goes through a :class:`Clock`, so
tests and ``access check --at`` can pick any instant (libfaketime is unreliable on these machines) and
unit tests advance time instead of sleeping. Wall time (``now``) is for schedules and records;
monotonic time is for timers, which must not jump when NTP corrects the wall clock.

:class:`SystemClock` puts timers on the running asyncio loop (whose time is ``time.monotonic()``);
:class:`FixedClock` stands still until a test moves it, and fires its due timers in deadline order
when it does. Threads and processes that have no loop (the pjsua2 thread, the camera worker) keep
``time.monotonic()``: their stamps are in the system clock's monotonic domain.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported where a loop is used: the camera process's motion detector reads only now()
    import asyncio  # and monotonic(), and asyncio (with ssl) is ~6 MB of its idle RSS (docs/performance.md)

SETTLE_ROUNDS = 20  # loop turns FixedClock.run_for gives woken tasks to schedule their next timer


class Timer(Protocol):
    """A pending call: what :meth:`Clock.call_later` returns (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not run it; harmless when it already ran or was cancelled."""
        ...

    def cancelled(self) -> bool: ...

    def when(self) -> float:
        """Its deadline on the clock's monotonic scale."""
        ...


class Clock(Protocol):
    """A source of wall-clock and monotonic time, and of timers on that monotonic time."""

    def now(self) -> datetime:
        """The current instant as an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` on the loop ``delay`` seconds from now."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock; timers run on the running asyncio loop."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        import asyncio

        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback, *args)

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


class ManualTimer:
    """A timer of :class:`FixedClock`: fired by :meth:`FixedClock.advance`, never by the loop."""

    def __init__(self, deadline: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._deadline = deadline
        self._callback = callback
        self._args = args
        self._cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        return self._deadline

    def fire(self) -> None:
        self.fired = True
        self._callback(*self._args)


class FixedClock:
    """A clock that stands still until moved: for unit tests and "what if" checks.

    Its timers run only when :meth:`advance` (or :meth:`run_for`) moves time past their deadline, in
    deadline order (equal deadlines in the order they were set), each with the clock set to its own
    deadline, so a test sees exactly what the real loop would do, without waiting.
    """

    def __init__(self, start: datetime, monotonic_start: float = 1000.0) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._mono = monotonic_start
        self._timers: list[tuple[float, int, ManualTimer]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> ManualTimer:
        timer = ManualTimer(self._mono + max(delay, 0.0), callback, args)
        heapq.heappush(self._timers, (timer.when(), next(self._order), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        """Returns once the clock has been moved ``seconds`` on (a task sleeping here waits for the test)."""
        import asyncio

        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await woken
        finally:
            timer.cancel()

    def pending(self) -> list[ManualTimer]:
        """Timers not yet fired nor cancelled, soonest first."""
        return [t for _, _, t in sorted(self._timers) if not t.cancelled()]

    def advance(self, seconds: float) -> None:
        """Move both clocks forward together, firing every timer that falls due on the way."""
        target = self._mono + seconds
        while (timer := self._next_due(target)) is not None:
            self._move_to(timer.when())
            timer.fire()
        self._move_to(target)

    async def run_for(self, seconds: float) -> None:
        """Like :meth:`advance`, but lets the loop run between timers, so that tasks woken by one
        (a sleeping loop, a relock task) can set their next timer before time moves on."""
        target = self._mono + seconds
        await _settle()
        while (timer := self._next_due(target)) is not None:
            self._move_to(timer.when())
            timer.fire()
            await _settle()
        self._move_to(target)
        await _settle()

    def _next_due(self, target: float) -> ManualTimer | None:
        while self._timers:
            deadline, _, timer = self._timers[0]
            if timer.cancelled():
                heapq.heappop(self._timers)
                continue
            if deadline > target:
                return None
            heapq.heappop(self._timers)
            return timer
        return None

    def _move_to(self, mono: float) -> None:
        if mono > self._mono:
            self._now += timedelta(seconds=mono - self._mono)
            self._mono = mono


async def _settle() -> None:
    import asyncio

    for _ in range(SETTLE_ROUNDS):
        await asyncio.sleep(0)


async def wait_event(clock: Clock, event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds of ``clock``'s time; True when it was set."""
    import asyncio

    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(*_: object) -> None:
        if not woken.done():
            woken.set_result(None)

    timer = clock.call_later(timeout, wake)
    waiter = loop.create_task(event.wait())
    waiter.add_done_callback(wake)
    try:
        await woken
    finally:
        timer.cancel()
        waiter.cancel()
    return event.is_set()
