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

from doorphoned.bus import Unsubscribe

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 60.0


class Feature(ABC):
    """Base of feature modules.

    Must override: :attr:`name`, :meth:`start`, :meth:`stop_feature`.
    May override: :meth:`status` (facts for ``doorphonectl status``).
    Use :meth:`on_stop` to register undo actions (bus unsubscriptions, timers); they run in
    reverse when the feature stops, before :meth:`stop_feature`.
    """

    name: str = "feature"

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop_feature(self) -> None: ...

    async def stop(self) -> None:
        """Cancel own tasks, run undo actions, then the feature's own stop. Idempotent."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._undo:
            self._undo.pop()()
        await self.stop_feature()

    def on_stop(self, undo: Unsubscribe) -> None:
        self._undo.append(undo)

    def spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        """Start a task this feature owns: kept referenced, cancelled at stop, failures logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task %s failed", self.name, task.get_name(), exc_info=task.exception())

    def status(self) -> dict[str, Any]:
        return {}


@dataclass
class FeatureState:
    feature: Feature
    state: str = "stopped"  # stopped | running | failed | retrying
    error: str = ""
    attempts: int = 0
    restarts: int = 0  # stops and starts of a running feature (reloads, replacements): shown in status
    retry: asyncio.TimerHandle | None = None


class Supervisor:
    """Starts features in order, stops them in reverse, retries the ones that fail."""

    def __init__(self) -> None:
        self._states: list[FeatureState] = []

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
        loop = asyncio.get_running_loop()
        state.retry = loop.call_later(delay, lambda: loop.create_task(self._start(state)))
        log.warning("feature %s: next start attempt in %.0f s", state.feature.name, delay)

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
