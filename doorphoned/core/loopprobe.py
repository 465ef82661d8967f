"""How long the asyncio loop could not run: a measure of door latency that does not depend on the load.

Every door decision waits for the loop, so the longest time the loop was held (by a slice of sync work
on the loop, by an fsync, or by another thread keeping the GIL) bounds what a keypad press can be
delayed by inside the daemon. Wall-clock latencies through hw-sim also include the other processes'
share of the CPU; this probe does not, which is why the benchmark reports both.

The probe is a task that sleeps 1 ms and records how late it woke, and how much CPU time the loop
thread used meanwhile (its own work, whatever the load: the load-independent figure). It costs ~1,000 wake-ups a second,
so it runs only while asked for (``loop.probe`` on the control socket, used by ``bench/cloud.py``).
The loop thread's CPU time is read with :func:`time.thread_time` on the loop itself and is always
available.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any

PERIOD = 0.001  # seconds the probe sleeps between wake-ups
BOUNDS_MS = (2, 5, 10, 20, 50)  # lags counted above each of these (ms)


@dataclass
class LagStats:
    """Lags seen since the probe started: the worst, and how many exceeded each bound."""

    wakeups: int = 0
    max_ms: float = 0.0
    max_cpu_ms: float = 0.0  # the loop thread's own CPU time between two wake-ups, at most
    max_gc_ms: float = 0.0  # the longest garbage collection (any thread: it holds the GIL throughout)
    over: dict[int, int] = field(default_factory=lambda: dict.fromkeys(BOUNDS_MS, 0))

    def add(self, lag_ms: float, cpu_ms: float) -> None:
        self.wakeups += 1
        self.max_ms = max(self.max_ms, lag_ms)
        self.max_cpu_ms = max(self.max_cpu_ms, cpu_ms)
        for bound in BOUNDS_MS:
            if lag_ms > bound:
                self.over[bound] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"wakeups": self.wakeups, "max_lag_ms": round(self.max_ms, 2), "max_cpu_ms": round(self.max_cpu_ms, 2),
                "max_gc_ms": round(self.max_gc_ms, 2),
                "over_ms": {str(b): n for b, n in self.over.items()}}


class LoopProbe:
    """Started and stopped on the loop; reading is cheap and can happen while it runs."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.stats = LagStats()
        self._gc_started = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """(Re)start with fresh figures."""
        self.stop()
        self.stats = LagStats()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-probe")
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        """Stop and wait for the task to end (daemon shutdown)."""
        task = self._task
        self.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def report(self) -> dict[str, Any]:
        """Called on the loop: ``loop_cpu_s`` is then this thread's CPU time."""
        return {"probe": self.running, **self.stats.as_dict(), "loop_cpu_s": round(time.thread_time(), 4)}

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """(any thread, GIL held) A collection starts or stops: time it."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.stats.max_gc_ms = max(self.stats.max_gc_ms, (time.perf_counter() - self._gc_started) * 1000)

    async def _run(self) -> None:
        """Wall-clock lag includes time the OS gave other processes; the loop thread's CPU time between
        two wake-ups does not: it is the longest stretch of the daemon's own work that held the loop."""
        while True:
            due, cpu = time.perf_counter() + PERIOD, time.thread_time()
            await asyncio.sleep(PERIOD)
            self.stats.add(max(0.0, time.perf_counter() - due) * 1000, (time.thread_time() - cpu) * 1000)
