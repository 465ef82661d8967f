"""Feature modules and the supervisor that runs them.

Each feature (doors, access, control socket, later SIP, cloud, readers) is a :class:`Feature`
with ``start()``/``stop()``: its constructor only stores arguments, ``start`` subscribes and opens
resources, ``stop`` undoes exactly that and may be called twice. The supervisor starts them in
order and stops them in reverse, and contains failures: a feature that fails to start is logged,
shown in ``status`` and retried with backoff while the others keep the door working.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from doorphoned.core.bus import Unsubscribe
from doorphoned.core.clock import Clock, SystemClock, Timer

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 60.0


class Tracker:
    """The tasks and timers one owner (a feature, a door) started: kept referenced, failures logged with
    the owner's name, all cancelled by :meth:`cancel_all`, so nothing of a stopped owner acts later."""

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[OwnedTimer] = set()

    def spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{what}")
        self.adopt(task)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Own a task someone else created (a server's connection handler)."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        owned = OwnedTimer(self, callback, args)
        owned.inner = self.clock.call_later(delay, owned.fire)
        self._timers.add(owned)
        return owned

    async def cancel_all(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def owned(self) -> tuple[list[asyncio.Task[Any]], list[Timer]]:
        return [t for t in self._tasks if not t.done()], list(self._timers)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task %s failed", self.name, task.get_name(), exc_info=task.exception())


class OwnedTimer:
    """A tracked timer: forgets itself when it fires or is cancelled (no growth over many calls)."""

    def __init__(self, owner: Tracker, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._callback = callback
        self._args = args
        self.inner: Timer | None = None
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        if self.inner is not None:
            self.inner.cancel()
        self._owner._timers.discard(self)

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        assert self.inner is not None
        return self.inner.when()

    def fire(self) -> None:
        self._owner._timers.discard(self)
        if self._cancelled:
            return
        self._cancelled = True  # spent: it cannot run again
        try:
            self._callback(*self._args)
        except Exception:
            log.exception("%s timer %s failed", self._owner.name, getattr(self._callback, "__name__", "?"))


class Feature(ABC):
    """Base of feature modules.

    Must override: :attr:`name`, :meth:`start`, :meth:`stop_feature`.
    May override: :meth:`status` (facts for ``doorphonectl status``).
    Use :meth:`on_stop` to register undo actions (bus unsubscriptions, lines); they run in
    reverse when the feature stops, before :meth:`stop_feature`. Start every task with
    :meth:`spawn` and every timer with :meth:`later`: both are cancelled at stop, so a stopped
    feature leaves nothing behind that could act on the doors or the store later.
    """

    name: str = "feature"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._undo: list[Callable[[], None]] = []
        self._own: Tracker | None = None

    @property
    def _tracker(self) -> Tracker:
        if self._own is None:  # made on first use: subclasses may set ``name`` after ``__init__``
            self._own = Tracker(self.name, self.clock)
        return self._own

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop_feature(self) -> None: ...

    async def stop(self) -> None:
        """Cancel own timers and tasks, run undo actions, then the feature's own stop. Idempotent.

        What ``stop_feature`` itself starts (a last hang-up, a record) is cancelled after it: nothing
        of a stopped feature stays behind.
        """
        await self._tracker.cancel_all()
        while self._undo:
            self._undo.pop()()
        try:
            await self.stop_feature()
        finally:
            await self._tracker.cancel_all()

    def on_stop(self, undo: Unsubscribe) -> None:
        self._undo.append(undo)

    def spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        """Start a task this feature owns: kept referenced, cancelled at stop, failures logged."""
        return self._tracker.spawn(coro, what)

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Own a task this feature did not create (a server's connection handler): cancelled at stop."""
        self._tracker.adopt(task)

    def later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds of the feature's clock, unless the feature
        stops first (or the returned timer is cancelled); an exception is logged with the feature's name."""
        return self._tracker.later(delay, callback, *args)

    def owned(self) -> tuple[list[asyncio.Task[Any]], list[Timer]]:
        """The tasks and timers still running or pending (both empty once stopped): for tests."""
        return self._tracker.owned()

    def status(self) -> dict[str, Any]:
        return {}


@dataclass
class FeatureState:
    feature: Feature
    state: str = "stopped"  # stopped | running | failed | retrying
    error: str = ""
    attempts: int = 0
    restarts: int = 0  # stops and starts of a running feature (reloads, replacements): shown in status
    retry: Timer | None = None
    starting: asyncio.Task[None] | None = None  # a retried start in progress


class Supervisor:
    """Starts features in order, stops them in reverse, retries the ones that fail."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._states: list[FeatureState] = []
        self._clock: Clock = clock or SystemClock()

    def add(self, feature: Feature) -> None:
        self._states.append(FeatureState(feature))

    def get(self, name: str) -> Feature | None:
        return next((s.feature for s in self._states if s.feature.name == name), None)

    async def start_all(self) -> None:
        for state in self._states:
            await self._start(state)

    async def _start(self, state: FeatureState) -> None:
        state.retry = None
        state.attempts += 1
        try:
            await state.feature.start()
        except Exception as exc:
            state.state, state.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("feature %s failed to start: %s", state.feature.name, state.error)
            await self._quiet_stop(state)
            self._schedule_retry(state)
            return
        state.state, state.error, state.attempts = "running", "", 0
        log.info("feature %s running", state.feature.name)

    def _schedule_retry(self, state: FeatureState) -> None:
        delay = min(RETRY_FIRST * 2 ** (state.attempts - 1), RETRY_MAX)
        state.state = "retrying"
        state.retry = self._clock.call_later(delay, self._retry, state)
        log.warning("feature %s: next start attempt in %.0f s", state.feature.name, delay)

    def _retry(self, state: FeatureState) -> None:
        """The retry timer fired: start again in a task the state keeps (cancelled if stopped meanwhile)."""
        state.retry = None
        state.starting = asyncio.get_running_loop().create_task(self._start(state),
                                                                name=f"supervisor:retry-{state.feature.name}")

    async def restart(self, name: str) -> None:
        for state in self._states:
            if state.feature.name == name:
                await self._stop(state)
                state.attempts = 0
                state.restarts += 1
                log.info("feature %s restarted (%d)", name, state.restarts)
                await self._start(state)

    async def remove(self, name: str) -> int:
        """Stop and drop the feature ``name``; returns its restart count (0 when absent)."""
        restarts = 0
        for state in list(self._states):
            if state.feature.name == name:
                await self._stop(state)
                self._states.remove(state)
                restarts = state.restarts
        return restarts

    async def insert_before(self, name: str, feature: Feature, restarts: int = 0) -> None:
        """Add and start a feature ahead of ``name`` (so stop order stays the reverse of start order);
        ``restarts`` carries the count over when this replaces a feature of the same name."""
        state = FeatureState(feature, restarts=restarts)
        index = next((i for i, s in enumerate(self._states) if s.feature.name == name), len(self._states))
        self._states.insert(index, state)
        await self._start(state)

    async def stop_all(self) -> list[str]:
        """Stop one at a time in reverse order; return every failure instead of stopping at the first."""
        errors = []
        for state in reversed(self._states):
            error = await self._stop(state)
            if error:
                errors.append(error)
        return errors

    async def _stop(self, state: FeatureState) -> str:
        if state.retry is not None:
            state.retry.cancel()
            state.retry = None
        starting, state.starting = state.starting, None
        if starting is not None and starting is not asyncio.current_task() and not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        if state.state == "stopped":
            return ""
        error = await self._quiet_stop(state)
        state.state = "stopped"
        return error

    @staticmethod
    async def _quiet_stop(state: FeatureState) -> str:
        try:
            await state.feature.stop()
        except Exception as exc:
            log.exception("feature %s failed to stop", state.feature.name)
            return f"{state.feature.name}: {exc}"
        return ""

    def report(self) -> list[dict[str, Any]]:
        return [{"name": s.feature.name, "state": s.state, "error": s.error, "restarts": s.restarts,
                 **s.feature.status()}
                for s in self._states]
