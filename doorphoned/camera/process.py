"""The camera process: one capture, a frame hub, and the consumers as threads holding subscriptions.

Why a process: OpenCV and the JPEG/FFmpeg decoders are large C libraries decoding untrusted network video.
In their own process a crash or a leak costs a camera restart, never the daemon (whose death would drop
every relay and the control socket). The daemon talks to it in JSON lines both ways (``camera/protocol.py``):
ops on stdin, events on stdout. Stdin reaching EOF means the daemon is gone (even by ``kill -9``): so are we.

Consumers today: QR decoding (``qr`` thread). Others add a thread here with a subscription from the hub
(``camera/motion.py``, ``camera/captures.py``, ``camera/monitor.py``) and, when they need the daemon, an op
in ``CameraProcess.ops`` and an event. ``DOORPHONE_CAMERA_CONSUMERS=module:function[,...]`` starts extra consumers
(``function(subscription, emit)`` in a thread of its own): how a test adds a slow consumer.

Run by hand to watch a camera: ``python -m doorphoned.camera.process`` and type
``{"op": "start", "source": "http://127.0.0.1:8090/camera.mjpg"}``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from doorphoned.camera import capture_ops, face_feed, protocol
from doorphoned.camera.capture import Activity, Capture, ChangeDetector, build_capture
from doorphoned.camera.hub import FrameHub
from doorphoned.camera.monitor_ops import MonitorOps
from doorphoned.core.urls import redact_url

log = logging.getLogger("doorphoned.camera.process")

STATS_EVERY = 5.0
IDLE_WAIT = 5.0  # consumers wait this long per get(): an idle hub costs a wake-up every few seconds
MAX_HOLDERS = 16  # set-active names kept: a bounded set whatever the daemon sends
CONSUMERS_ENV = "DOORPHONE_CAMERA_CONSUMERS"  # not DOORPHONED_: that prefix is the config's
Emit = Callable[..., None]


class Output:
    """Events to stdout, one line each, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, ev: str, **fields: Any) -> None:
        line = protocol.encode({"ev": ev, **fields})
        with self._lock:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()


class CameraProcess:
    """The process's state: hub, activity gate, capture, consumers; ops come in through :meth:`handle`."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.hub = FrameHub()
        self.activity = Activity()
        self.capture: Capture | None = None
        self.settings: dict[str, Any] = {}
        self._started = threading.Event()
        self.qr_ms = 0.0
        self.ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "start": self.op_start, "wake": self.op_wake, "set-active": self.op_set_active,
            "status": self.op_status}
        self.monitor = MonitorOps(self.hub, self.activity, out.emit)
        self.monitor.register(self.ops)

    # ---- ops (stdin)
    def handle(self, line: bytes) -> None:
        """Run one op. An op carrying ``req`` (a request) is answered by one ``reply`` event with the same
        ``req``, ``ok`` and the handler's fields or the refusal's ``message``; an op without is answered
        only when refused (``op_error``)."""
        req: int | None = None
        try:
            name, message = protocol.decode(line, "op")
            req = protocol.request_id(message)
            handler = self.ops.get(name)
            if handler is None:
                raise protocol.ProtocolError(f"unknown op {name[:40]!r}")
            result = handler(message)
            if req is not None and result is not protocol.DEFERRED:
                self.out.emit("reply", req=req, ok=True, **(result or {}))
        except protocol.ProtocolError as exc:
            self._refuse(req, str(exc))
        except Exception as exc:  # a bug in an op must not end the ops thread (the daemon could not stop us)
            log.exception("op failed")
            self._refuse(req, f"op failed: {type(exc).__name__}")

    def _refuse(self, req: int | None, message: str) -> None:
        if req is None:
            self.out.emit("op_error", message=message)
        else:
            self.out.emit("reply", req=req, ok=False, message=message)

    def op_start(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if self._started.is_set():
            raise protocol.ProtocolError("already started")
        self.settings = {
            "source": protocol.text(message, "source"),
            "capture": protocol.text(message, "capture", "auto"),
            "active_seconds": protocol.number(message, "active_seconds", 3.0, 0.1, 600),
            "change_fraction": protocol.number(message, "change_fraction", 0.01, 0.0, 1.0),
            "change_delta": int(protocol.number(message, "change_delta", 16, 1, 255)),
            "fps": int(protocol.number(message, "fps", 15, 1, 60)),
        }
        if self.settings["capture"] not in ("auto", "mjpeg", "opencv"):
            raise protocol.ProtocolError("capture must be auto, mjpeg or opencv")
        self.monitor.configure(message)
        self._started.set()
        return None

    def op_wake(self, message: dict[str, Any]) -> dict[str, Any] | None:
        self.activity.wake(protocol.number(message, "seconds", 5.0, 0.0, 3600))
        return None

    def op_set_active(self, message: dict[str, Any]) -> dict[str, Any] | None:
        consumer = protocol.text(message, "consumer", limit=64)
        active = message.get("active")
        if not isinstance(active, bool):
            raise protocol.ProtocolError("active must be true or false")
        if active and consumer not in self.activity.held and len(self.activity.held) >= MAX_HOLDERS:
            raise protocol.ProtocolError(f"at most {MAX_HOLDERS} consumers can hold the camera active")
        self.activity.hold(consumer, active)
        return None

    def op_status(self, message: dict[str, Any]) -> dict[str, Any]:
        """The process's counters now (as a request: the daemon waits for them)."""
        return {"started": self._started.is_set(), **self.counters()}

    def counters(self) -> dict[str, Any]:
        """One reading of the counters, for the periodic ``stats`` event and the ``status`` request alike."""
        c = self.capture.counters if self.capture is not None else None
        return {"frames": c.frames if c else 0, "reduced": c.reduced if c else 0, "published": self.hub.published,
                "changes": c.changes if c else 0, "active": self.activity.active(), "held": self.activity.held,
                "decode_ms": round(self.qr_ms, 1), "dropped": {m.name: m.dropped for m in self.hub.subscribers}}

    # ---- the capture (main thread)
    def run(self) -> int:
        self._started.wait()
        s = self.settings
        capture = build_capture(s["source"], s["capture"], self.hub, self.activity,
                                ChangeDetector(s["change_fraction"], s["change_delta"]), s["active_seconds"])
        capture.fps = s["fps"]
        capture.on_connected = lambda: self.out.emit("connected", capture=capture.kind)
        self.capture = capture
        self._start_consumers()
        self.monitor.start()
        try:
            capture.run()
            message = "camera stream ended"
        except ConnectionError as exc:
            message = str(exc) or "camera stream lost"
        except Exception as exc:  # OpenCV raises cv2.error (not a ConnectionError) on a broken source
            message = f"camera failed: {type(exc).__name__}"
        self.out.emit("error", message=redact_url(message))
        return 1

    # ---- consumers (threads)
    def _start_consumers(self) -> None:
        self._thread("qr", self.qr_consumer)
        self._thread("stats", self.stats_loop)
        for spec in filter(None, os.environ.get(CONSUMERS_ENV, "").split(",")):
            module, _, name = spec.partition(":")
            function = getattr(importlib.import_module(module), name)
            subscription = self.hub.subscribe(name)
            self._thread(name, functools.partial(function, subscription, self.out.emit))

    @staticmethod
    def _thread(name: str, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    def qr_consumer(self) -> None:
        """Decode each frame it gets; report the set of codes in view when it changes (the daemon tells a
        code left in view from one shown again by that)."""
        from doorphoned.camera.qr import QrDecoder

        decoder, subscription = QrDecoder(), self.hub.subscribe("qr")
        shown: list[str] = []
        while True:
            if (frame := subscription.get(IDLE_WAIT)) is None:
                continue
            started = time.perf_counter()
            try:
                texts = sorted(set(decoder.decode(frame.image)))
            finally:
                self.hub.finished("qr", frame.seq)  # the stream encodes this frame now (monitor.Producer)
            self.qr_ms = (time.perf_counter() - started) * 1000
            if texts != shown:
                age_ms = round((time.monotonic() - frame.monotonic) * 1000, 1)  # glass -> decoded
                # frame_at: the instant the frame entered this process (monotonic, shared with the daemon),
                # so the daemon can time the frame to its access decision; sent_at: when the event left, so
                # that time splits into this process's part and the daemon's.
                self.out.emit("qr", texts=texts, seq=frame.seq, age_ms=age_ms, frame_at=frame.monotonic,
                              sent_at=time.monotonic())
                shown = texts

    def stats_loop(self) -> None:
        while True:
            time.sleep(STATS_EVERY)
            if self.capture is not None:
                self.out.emit("stats", **self.counters())


def read_ops(process: CameraProcess) -> None:
    """Ops from stdin until EOF (the daemon is gone, even by kill -9): then exit at once."""
    stdin = sys.stdin.buffer
    while line := stdin.readline(protocol.MAX_LINE + 1):
        if not line.endswith(b"\n") and len(line) > protocol.MAX_LINE:
            process.out.emit("op_error", message="line too long")
            while (rest := stdin.readline(protocol.MAX_LINE + 1)) and not rest.endswith(b"\n"):
                pass
            continue
        process.handle(line)
    os._exit(0)


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m doorphoned.camera.process  (ops on stdin, events on stdout)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="camera: %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # PyGObject (the monitor stream) loads its cairo bridge (cairo, pixman, freetype: ~2 MB of RSS) when it
    # starts, if it can; the stream never draws with cairo, so the bridge is made unimportable (optional to
    # PyGObject: built without it, it does the same).
    sys.modules.setdefault("gi._gi_cairo", None)  # type: ignore[arg-type]
    out = Output()
    process = CameraProcess(out)
    capture_ops.register(process)
    face_feed.register(process)
    threading.Thread(target=read_ops, args=(process,), name="ops", daemon=True).start()
    out.emit("hello", version=protocol.VERSION, pid=os.getpid(), ops=sorted(process.ops))
    code = process.run()
    # Not a normal interpreter exit: the ops thread is blocked reading stdin, and finalising a buffered
    # stream another thread holds aborts the interpreter (SIGABRT). Everything we write is flushed already.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
