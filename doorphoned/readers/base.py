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

from doorphoned.access import Credential
from doorphoned.clock import Clock
from doorphoned.feature import Feature
from doorphoned.gate import AccessGate

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class RepeatFilter:
    """Passes a value the first time it is seen within ``window`` seconds (a card left on the
    reader, a QR code held in front of the lens) and drops the repeats."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def first(self, value: str, now: float) -> bool:
        if now - self._seen.get(value, float("-inf")) < self.window:
            return False
        self._seen = {v: t for v, t in self._seen.items() if now - t < self.window}
        self._seen[value] = now
        return True


class ReaderFeature(Feature):
    """Base of credential readers.

    Must override: :attr:`name`, :meth:`run_session` (open the device, deliver credentials with
    :meth:`deliver` until the device fails, then raise; clean up in ``finally``).
    May override: :meth:`reader_status` (extra facts for ``status``).
    """

    def __init__(self, gate: AccessGate, doors: Sequence[int], clock: Clock) -> None:
        super().__init__()
        self.gate = gate
        self.doors = tuple(doors)
        self.clock = clock
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
            await asyncio.sleep(delay)
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
