"""The daemon side of the camera: supervise the camera process and turn its events into bus events.

The daemon never loads OpenCV. This feature starts ``python -m doorphoned.camera.process``, checks its
``hello`` (protocol version), sends it the settings (the source URL travels on stdin, never on a command
line), and then reads its events through a table (``_EVENTS``): ``connected`` and the loss of the process
become :class:`CameraStateChanged`, ``qr`` becomes :class:`QrCodesInView` (the QR reader in ``readers/``
turns those into presentations to the gate), ``stats`` feed ``status``. Ops go the other way through
:meth:`send`: ``wake`` when a door opens or someone publishes :class:`CameraWake`, ``set-active`` for a
consumer that needs continuous frames.

A process that exits or breaks the protocol is a fault: logged, shown in ``status``, restarted with
exponential backoff (0.5 s doubling to 30 s; back to 0.5 s after a healthy run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from doorphoned.camera import protocol
from doorphoned.camera.config import CameraConfig
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.commands import shown
from doorphoned.core.events import CameraStateChanged, CameraWake, DoorStatusChanged, QrCodesInView
from doorphoned.core.feature import Feature
from doorphoned.core.urls import redact_url

if TYPE_CHECKING:
    from doorphoned.camera.monitor_link import MonitorLink

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 60.0  # Python + OpenCV import on a loaded 2-core machine
REQUEST_TIMEOUT = 10.0
STOP_SECONDS = 3.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
CAMERA_MALLOC = {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "131072"}
FRAME_AT_MAX_AGE = 3600.0  # s: an older (or future) frame stamp from the camera process is not believed


class CameraFeature(Feature):
    name = "camera"

    def __init__(self, config: CameraConfig, bus: EventBus, clock: Clock) -> None:
        super().__init__(clock)
        self.config = config
        self.bus = bus
        self.state = "starting"
        self.error = ""
        self.since = clock.now()
        self.pid: int | None = None
        self.capture = ""
        self.stats: dict[str, Any] = {}
        self.qr_age_ms: float | None = None  # capture -> decoded, of the last change of codes in view
        self._stdin: asyncio.StreamWriter | None = None
        self._next_req = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, Callable[[dict[str, Any]], None]] = {
            "connected": self._on_connected, "qr": self._on_qr, "stats": self._on_stats,
            "op_error": self._on_op_error, "error": self._on_error, "reply": self._on_reply}
        self.monitor: MonitorLink | None = None  # set by MonitorLink when [monitor] is enabled

    def add_events(self, handlers: dict[str, Callable[[dict[str, Any]], None]]) -> None:
        """More event handlers (the monitor's), for events only their module knows."""
        self._events.update(handlers)

    async def start(self) -> None:
        self.on_stop(self.bus.subscribe(CameraWake, lambda e: self.wake(e.seconds), self.name))
        if self.config.wake_on_door:
            self.on_stop(self.bus.subscribe(DoorStatusChanged, self._on_door, self.name))
        self.spawn(self._supervise(), "process")

    async def stop_feature(self) -> None:
        self._set_state("stopped")

    # ---- ops to the process
    def send(self, op: str, **fields: Any) -> bool:
        """Write one op; False when no process is running to take it (the op is dropped, not queued)."""
        if self._stdin is None or self._stdin.is_closing():
            return False
        self._stdin.write(protocol.encode({"op": op, **fields}))
        return True

    async def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send ``op`` as a request and return the process's reply fields; :class:`CameraError` when no
        process is running, it refused (its reason), it did not answer within ``timeout`` seconds, or it
        ended before answering. Callers (snapshot, monitor grants) thus fail loudly, never hang."""
        self._next_req = self._next_req % protocol.MAX_REQUEST_ID + 1
        req = self._next_req
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            if not self.send(op, req=req, **fields):
                raise CameraError(f"camera {op}: no camera process is running ({self.state})")
            late = CameraError(f"camera {op}: no reply in {timeout:g} s")
            timer = self.clock.call_later(timeout, _fail, future, late)
            try:
                reply = await future
            finally:
                timer.cancel()
        finally:
            self._pending.pop(req, None)
        if reply.get("ok") is not True:
            raise CameraError(f"camera {op}: {str(reply.get('message', 'refused'))[:300]}")
        return {k: v for k, v in reply.items() if k not in ("ev", "req", "ok")}

    def _on_reply(self, message: dict[str, Any]) -> None:
        try:
            req = protocol.request_id(message)
        except protocol.ProtocolError as exc:
            log.warning("camera process: reply ignored (%s)", exc)
            return
        future = self._pending.get(req) if req is not None else None
        if future is None:
            log.warning("camera process: reply to no pending request ignored")
            return
        if not future.done():
            future.set_result(message)

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            _fail(future, CameraError(reason))

    def on_event(self, name: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Route the process's event ``name`` to ``handler`` (a consumer's daemon side: motion alerts)."""
        self._events[name] = handler

    def wake(self, seconds: float) -> None:
        self.send("wake", seconds=max(0.0, min(float(seconds), 3600.0)))

    def set_active(self, consumer: str, active: bool) -> None:
        self.send("set-active", consumer=consumer, active=active)

    def announce(self) -> None:
        """Publish the camera's state again, for a subscriber that came later (a QR reader replaced by a
        configuration change while this process kept running)."""
        self.bus.publish(CameraStateChanged(self.clock.now(), self.state == "ok", self.error))

    def _on_door(self, event: DoorStatusChanged) -> None:
        if event.is_open:
            self.wake(self.config.wake_on_door)

    # ---- the process
    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                healthy = self.state == "ok"
                self._set_state("fault", f"{type(exc).__name__}: {exc}")
                self.bus.publish(CameraStateChanged(self.clock.now(), False, self.error))
                log.error("camera fault: %s; retrying in %.1f s", self.error, delay)
                if healthy:
                    delay = BACKOFF_FIRST
            await self.clock.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "doorphoned.camera.process", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=protocol.MAX_LINE + 1, env=process_env(os.environ))
        self.pid = proc.pid
        assert proc.stdin is not None and proc.stdout is not None
        try:
            await self._handshake(proc.stdout, proc.stdin)
            while line := await proc.stdout.readline():
                self._event(line)
            raise ConnectionError(f"camera process exited with status {await proc.wait()}")
        finally:
            self._stdin, self.pid = None, None
            if self.monitor is not None:
                self.monitor.process_ended()
            self._fail_pending("camera process ended before it answered")
            await _stop(proc)

    async def _handshake(self, stdout: asyncio.StreamReader, stdin: asyncio.StreamWriter) -> None:
        line = await asyncio.wait_for(stdout.readline(), HELLO_TIMEOUT)
        try:
            name, hello = protocol.decode(line, "ev")
        except protocol.ProtocolError as exc:
            raise ConnectionError(f"camera process did not say hello ({exc})") from None
        if name != "hello" or hello.get("version") != protocol.VERSION:
            raise ConnectionError(f"camera process speaks another protocol ({name} version "
                                  f"{hello.get('version')!r}, want {protocol.VERSION})")
        self._stdin = stdin
        c = self.config
        extra = self.monitor.start_fields() if self.monitor is not None else {}
        self.send("start", source=c.source, capture=c.capture, fps=c.fps, active_seconds=c.active_seconds,
                  change_fraction=c.change_fraction, change_delta=c.change_delta, **extra)

    def _event(self, line: bytes) -> None:
        try:
            name, message = protocol.decode(line, "ev")
        except protocol.ProtocolError as exc:
            log.warning("camera process: line ignored (%s)", exc)
            return
        handler = self._events.get(name)
        if handler is None:
            log.warning("camera process: unknown event %r ignored", name[:40])
            return
        handler(message)

    def _on_connected(self, message: dict[str, Any]) -> None:
        capture = message.get("capture")
        self.capture = capture if capture in ("mjpeg", "opencv") else "unknown"
        self._set_state("ok")
        log.log(25, "camera ready (%s capture of %s)", self.capture, redact_url(self.config.source))
        self.bus.publish(CameraStateChanged(self.clock.now(), True))

    def _on_qr(self, message: dict[str, Any]) -> None:
        read_at = time.monotonic()
        texts = message.get("texts")
        with contextlib.suppress(protocol.ProtocolError):
            self.qr_age_ms = protocol.number(message, "age_ms", 0.0, 0.0, 1e9)
        if isinstance(texts, list):
            self.bus.publish(QrCodesInView(self.clock.now(), frozenset(t for t in texts if isinstance(t, str)),
                                           frame_at=_frame_at(message), sent_at=_frame_at(message, "sent_at"),
                                           read_at=read_at))

    def _on_stats(self, message: dict[str, Any]) -> None:
        """Keep only the known counters, each of its type (status goes out as JSON to the CLI and the cloud)."""
        stats: dict[str, Any] = {}
        for key in ("frames", "published", "changes", "decode_ms"):
            with contextlib.suppress(protocol.ProtocolError):
                stats[key] = protocol.number(message, key, 0, 0, 1e15)
        stats["active"] = message.get("active") is True
        held, dropped = message.get("held"), message.get("dropped")
        stats["held"] = [h[:64] for h in held[:16] if isinstance(h, str)] if isinstance(held, list) else []
        stats["dropped"] = ({str(k)[:64]: int(v) for k, v in list(dropped.items())[:16]
                             if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**15}
                            if isinstance(dropped, dict) else {})
        self.stats = stats

    def _on_op_error(self, message: dict[str, Any]) -> None:
        log.warning("camera process refused an op: %s", shown(str(message.get("message", "")), 200))

    def _on_error(self, message: dict[str, Any]) -> None:
        raise ConnectionError(shown(str(message.get("message", "camera process failed")), 300))

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.state or error != self.error:
            self.since = self.clock.now()
        self.state, self.error = state, error

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"camera": self.state, "camera_error": self.error, "since": self.since.isoformat(),
                "source": redact_url(self.config.source), "process_pid": self.pid, "capture": self.capture,
                "frames": s.get("frames", 0), "published": s.get("published", 0), "active": s.get("active", False),
                "changes": s.get("changes", 0), "held_by": s.get("held", []), "last_decode_ms": s.get("decode_ms", 0),
                "dropped": s.get("dropped", {}), "last_qr_age_ms": self.qr_age_ms,
                **({"monitor": self.monitor.summary()} if self.monitor is not None else {})}


def process_env(base: Mapping[str, str]) -> dict[str, str]:
    """The camera process's environment: ours, with glibc's allocator told to keep less (unless set already).

    Its threads (capture, QR, motion, stream) each get a malloc arena of their own by default, and freed
    frame buffers stay in them: two arenas and a fixed 128 KB trim threshold (which also keeps frames above
    128 KB in mmap'd blocks given back when freed) took 3 MB off its idle RSS (docs/performance.md); an idle
    camera decodes no full frame, so the per-frame mmap costs nothing there."""
    return {**CAMERA_MALLOC, **base}


def _frame_at(message: dict[str, Any], key: str = "frame_at") -> float | None:
    """The ``qr`` event's ``frame_at`` (or its stamp ``key``) when it is a plausible instant of the shared
    monotonic clock (not in the future, at most ``FRAME_AT_MAX_AGE`` s old), else None: a wrong stamp costs a
    figure, nothing else."""
    value = message.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        stamp = float(value)  # an integer of 400 digits does not fit (OverflowError)
    except OverflowError:
        return None
    if not math.isfinite(stamp):
        return None
    return stamp if 0.0 <= time.monotonic() - stamp <= FRAME_AT_MAX_AGE else None


class CameraError(RuntimeError):
    """A request to the camera process that did not do what it asked (reason in the message)."""


def _fail(future: asyncio.Future[dict[str, Any]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
