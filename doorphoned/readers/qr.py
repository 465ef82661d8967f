"""QR codes shown to the camera, as a credential reader.

The camera feature (``doorphoned/camera/``) owns the capture and the decoding; it publishes on the bus
what it sees: :class:`CameraStateChanged` and :class:`QrCodesInView` (the codes in view, when that set
changes). This reader turns them into presentations to the gate: once per stay in view (a code held in front
of the lens counts again only after it has been out of view for ``qr_cooldown`` seconds). The camera being
down is this reader's fault (shown in ``status``), healed when the camera is up again.

The bus subscription is made once at start, not per session, so a camera that comes up while this reader
waits out a backoff is not missed.
"""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from typing import Any

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import CameraStateChanged, Event, QrCodesInView
from doorphoned.core.latency import LatencyWindow
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import QrScan
from doorphoned.readers.base import InView, ReaderFeature
from doorphoned.readers.config import QrCameraSettings

MAX_PENDING = 256  # changes of view not yet handed to the gate; beyond it the oldest are dropped
PARTS = ("camera", "pipe", "daemon")  # frame -> event sent -> event read -> decision


class QrReader(ReaderFeature):
    name = "qr"

    def __init__(self, config: QrCameraSettings, gate: Gate, clock: Clock, bus: EventBus) -> None:
        super().__init__(gate, config.qr_doors, clock)
        self.config = config
        self.bus = bus
        self._in_view = InView(config.qr_cooldown)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(MAX_PENDING)
        self._camera_up = False
        self._camera_error = "camera not up yet"
        self.dropped = 0
        # Frame entered the camera process -> its access decision made, recorded and the door commanded
        # (gate.present returned): the "QR frame -> decision" figure, without hw-sim's or a bench's timing.
        self.decisions = LatencyWindow()
        # The same time in parts (``qr_decision_parts_ms``): frame -> event written (camera process), written ->
        # read (the pipe and the daemon's loop), read -> decision (the daemon), to see which one a load slows.
        self.parts = {part: LatencyWindow() for part in PARTS}

    async def start(self) -> None:
        self.on_stop(self.bus.subscribe(CameraStateChanged, self._put, self.name))
        self.on_stop(self.bus.subscribe(QrCodesInView, self._put, self.name))
        await super().start()

    def _put(self, event: Event) -> None:
        if isinstance(event, CameraStateChanged):
            self._camera_up, self._camera_error = event.up, event.detail
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def run_session(self) -> None:
        while True:  # what was queued before the camera came up is stale (a state change, codes of a dead view)
            while not self._queue.empty():
                self._queue.get_nowait()
            if self._camera_up:
                break
            await self._queue.get()
        # A new camera process reports only changes from an empty view: what the last one saw has left now
        # (a code still there within qr_cooldown stays the same presentation).
        self._in_view.update(frozenset(), self.clock.monotonic())
        self.connected()
        while True:
            event = await self._queue.get()
            if isinstance(event, CameraStateChanged) and not event.up:
                raise ConnectionError(event.detail or "camera down")
            if isinstance(event, QrCodesInView):
                await self._seen(event.texts, event)

    async def _seen(self, texts: frozenset[str], stamps: QrCodesInView | None = None) -> None:
        for text in self._in_view.update(texts, self.clock.monotonic()):
            await self.deliver(QrScan(text, "camera"))
            if stamps is not None:
                self._time(stamps, time.monotonic())  # real time, not self.clock: the camera stamped on it

    def _time(self, stamps: QrCodesInView, decided: float) -> None:
        """Record frame -> decision, and its parts when every stamp is there and they are in order."""
        if stamps.frame_at is None:
            return
        self.decisions.add((decided - stamps.frame_at) * 1000)
        if stamps.sent_at is None or stamps.read_at is None:
            return
        spans = [(end - start) * 1000 for start, end in pairwise((stamps.frame_at, stamps.sent_at, stamps.read_at,
                                                                    decided))]
        if min(spans) >= 0:
            for part, ms in zip(PARTS, spans, strict=True):
                self.parts[part].add(ms)

    def reader_status(self) -> dict[str, Any]:
        return {"qr_in_view": self._in_view.present(self.clock.monotonic()), "dropped": self.dropped,
                "qr_decision_ms": self.decisions.summary(),
                "qr_decision_parts_ms": {part: window.summary() for part, window in self.parts.items()}}
