"""The reader seam: every credential reader is a feature that degrades alone and heals itself.

A reader that loses its device (serial port unplugged, camera stream gone, NFC chip not answering)
must not take the daemon or the other readers with it. :class:`ReaderFeature` runs the reader's
session in a loop: ``run_session()`` holds the device until it fails; the failure is logged and
shown in ``status`` (``fault`` + reason), and the session is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from doorphoned.core.clock import Clock
from doorphoned.core.feature import Feature
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import Credential

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class RepeatFilter:
    """One presentation per stay: a value (a card held on the reader) passes when it was not seen in
    the last ``window`` seconds; every sighting, passed or not, restarts that window.

    So a card left on the reader is one presentation however long it stays (the reader keeps reading
    it); it counts again only after it has been out of the field for ``window`` seconds.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def first(self, value: str, now: float) -> bool:
        last = self._seen.get(value, float("-inf"))
        self._seen = {v: t for v, t in self._seen.items() if now - t < self.window}
        self._seen[value] = now
        return now - last >= self.window

    def forget(self, value: str) -> None:
        """``value`` counts again at its next sighting (a presentation that must not hold back the next one)."""
        self._seen.pop(value, None)

    def present(self, now: float) -> int:
        """How many values are still taken to be in front of the reader."""
        return sum(1 for t in self._seen.values() if now - t < self.window)


class InView:
    """Codes in view of a camera, told as the set of codes in each decoded frame that differs from the
    one before (the worker reports changes only; a stalled decoder reports nothing and changes nothing).

    A code is presented when it enters the view; it stays one presentation until it has been out of
    view for ``gone_after`` seconds, so a code that drops out of a frame or two (glare, a moving phone)
    does not count twice, and one left in front of the lens counts once.
    """

    def __init__(self, gone_after: float) -> None:
        self.gone_after = gone_after
        self._visible: frozenset[str] = frozenset()
        self._left: dict[str, float] = {}

    def update(self, visible: frozenset[str], now: float) -> list[str]:
        """The codes of this change that are new presentations, in a stable order."""
        entered = sorted(visible - self._visible)
        for code in self._visible - visible:
            self._left[code] = now
        new = [c for c in entered if now - self._left.pop(c, float("-inf")) >= self.gone_after]
        self._visible = visible
        self._left = {c: t for c, t in self._left.items() if now - t < self.gone_after}
        return new

    def present(self, now: float) -> int:
        """Codes in view or left less than ``gone_after`` ago (a test waits for 0 before showing again)."""
        return len(self._visible) + sum(1 for t in self._left.values() if now - t < self.gone_after)


class ReaderFeature(Feature):
    """Base of credential readers.

    Must override: :attr:`name`, :meth:`run_session` (open the device, deliver credentials with
    :meth:`deliver` until the device fails, then raise; clean up in ``finally``).
    May override: :meth:`reader_status` (extra facts for ``status``).
    """

    def __init__(self, gate: Gate, doors: Sequence[int], clock: Clock) -> None:
        super().__init__(clock)
        self.gate = gate
        self.doors = tuple(doors)
        self.state = "starting"
        self.error = ""
        self.since = clock.now()
        self.reads = 0

    async def start(self) -> None:
        self.spawn(self._supervise(), "session")

    async def stop_feature(self) -> None:
        self._set_state("stopped")

    @abstractmethod
    async def run_session(self) -> None:
        """Hold the device and deliver credentials until it fails (raise) or the task is cancelled."""

    def connected(self) -> None:
        """Sessions call this once the device is open and reading."""
        self._set_state("ok")
        log.log(25, "reader %s ready", self.name)

    async def deliver(self, credential: Credential) -> None:
        self.reads += 1
        await self.gate.present(credential, self.doors)

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self.run_session()
                raise ConnectionError("device closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                healthy = self.state == "ok"
                self._set_state("fault", f"{type(exc).__name__}: {exc}")
                log.error("reader %s fault: %s; retrying in %.1f s", self.name, self.error, delay)
                if healthy:
                    delay = BACKOFF_FIRST
            await self.clock.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.state or error != self.error:
            self.since = self.clock.now()
        self.state, self.error = state, error

    def reader_status(self) -> dict[str, Any]:
        return {}

    def status(self) -> dict[str, Any]:
        return {"reader": self.state, "reader_error": self.error, "since": self.since.isoformat(),
                "reads": self.reads, "doors": list(self.doors), **self.reader_status()}
