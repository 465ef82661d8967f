"""The camera as a QR reader, through a worker process (``camera_worker``) that captures and decodes.

The daemon keeps only the small part: start the worker, read its JSON lines, act on each QR payload
once per stay in view (a code held in front of the lens is in every frame; it counts again only after
it has been out of view for ``qr_cooldown`` seconds), and treat the worker's exit as a reader fault
(retried with backoff). OpenCV is never loaded into the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

from doorphoned.core.clock import Clock
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import QrScan
from doorphoned.core.urls import redact_url
from doorphoned.readers.base import InView, ReaderFeature
from doorphoned.readers.config import QrCameraSettings

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
STOP_SECONDS = 3.0


class CameraReader(ReaderFeature):
    name = "camera"

    def __init__(self, config: QrCameraSettings, gate: Gate, clock: Clock) -> None:
        super().__init__(gate, config.qr_doors, clock)
        self.config = config
        self._in_view = InView(config.qr_cooldown)
        self.frames = 0
        self.decode_ms = 0.0
        self.worker_pid: int | None = None

    async def run_session(self) -> None:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "doorphoned.readers.camera_worker", self.config.source,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_LINE)
        self.worker_pid = worker.pid
        assert worker.stdout is not None
        try:
            while line := await worker.stdout.readline():
                await self._event(line)
            code = await worker.wait()
            raise ConnectionError(f"camera worker exited with status {code}")
        finally:
            self.worker_pid = None
            await _stop(worker)

    async def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("camera worker: unreadable line ignored")
            return
        kind = event.get("ev")
        if kind == "connected":
            # A new worker reports only changes from an empty view: what the last one saw has left now
            # (a code still there within qr_cooldown stays the same presentation).
            self._in_view.update(frozenset(), self.clock.monotonic())
            self.connected()
        elif kind == "qr" and isinstance(texts := event.get("texts"), list):
            await self._payloads(frozenset(t for t in texts if isinstance(t, str)))
        elif kind == "stats":
            self.frames, self.decode_ms = int(event.get("frames", 0)), float(event.get("decode_ms", 0))
        elif kind == "error":
            raise ConnectionError(str(event.get("message", "camera worker failed")))

    async def _payloads(self, visible: frozenset[str]) -> None:
        for text in self._in_view.update(visible, self.clock.monotonic()):
            await self.deliver(QrScan(text, self.name))

    def reader_status(self) -> dict[str, Any]:
        return {"source": redact_url(self.config.source), "worker_pid": self.worker_pid, "frames": self.frames,
                "last_decode_ms": round(self.decode_ms, 1), "qr_in_view": self._in_view.present(self.clock.monotonic())}


async def _stop(worker: asyncio.subprocess.Process) -> None:
    if worker.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.terminate()
    try:
        await asyncio.wait_for(worker.wait(), STOP_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
        await worker.wait()
