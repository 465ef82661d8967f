"""The recognition worker: a process of its own that turns camera frames into "this user is at the door".

Why a process, not a consumer thread in the camera process: dlib holds the GIL for the ~100 ms of a HOG
detection and an encoding, which would stall the camera process's capture, QR and monitor threads; its
~200 MB of models would also be charged to the camera (and a crash in it would cost every camera consumer).
Here it costs only itself: the daemon (``face/feature.py``) restarts it with backoff.

Frames come from the shared camera, not a second capture: the camera process's ``face-feed`` op connects to
this worker's Unix socket and sends the hub's frames (only while the capture is active: motion, a change of
picture, a wake input) at most ``max_fps`` a second; the worker keeps only the newest (a slow worker drops
frames, never slows the camera). Each frame: HOG detection on a copy scaled by ``detect_scale``, the largest
face encoded at full size, matched 1:N (:mod:`doorphoned.face.matcher`), K of the last N frames voting.
When ``liveness`` is on, the frames the face was seen in go to ``doorphoned.face.liveness.assess`` (with the
``[face]`` liveness keys as its parameters), each with the screen score of its face region at full resolution
(:mod:`doorphoned.face.screen`: the 64 px crop is too small for a screen's pixel grid).

Ops on stdin (JSON lines): ``configure`` (store path, device-key path, socket path, settings), ``reload``,
``status``. Events on stdout: ``hello``, ``ready``, ``match`` (user id, distance, second distance, liveness
reasons), ``unknown`` (distance only), ``stats``. No template, encoding or picture ever leaves the process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from doorphoned.core.devicekey import DeviceKey
from doorphoned.face.matcher import Matcher, Votes, judge
from doorphoned.face.observations import FaceBox, FaceFrame, LivenessVerdict
from doorphoned.face.store import load_gallery

log = logging.getLogger("doorphoned.face.worker")

VERSION = 1
MAX_LINE = 64 * 1024
MAX_FRAME_BYTES = 1920 * 1080 * 3
HEADER_MAX = 1024
POLL_SECONDS = 1.0  # the templates' version is read this often (a change elsewhere: a sync, a removal)
GONE_SECONDS = 2.0  # no face for this long: the presence ended (votes cleared, an unknown may be reported again)
CROP_SIDE = 64
NICE = 10
WANTED, FOLLOWING = b"1", b"F"  # a frame request; the same while a face is followed: keep the camera awake
LIVENESS_KEPT = 64  # frames kept for the liveness check (its window, 6 s, bounds what it looks at)


@dataclass
class Settings:
    threshold: float = 0.5
    margin: float = 0.1
    k: int = 2
    n: int = 3
    max_fps: float = 4.0
    detect_scale: float = 0.5
    liveness: bool = False
    liveness_blink_dip: float = 0.4
    liveness_parallax: float = 0.048
    # A matched face not (yet) live is refused only once seen this long, in enough frames for the check:
    # people blink every 2-10 s (about every 4 s on average) and a loaded unit samples fewer frames, so 3 s
    # refused live faces that had not blinked yet (seen in the e2e test on a loaded machine); a photo never
    # shows a cue, and refusing it 3 s later costs nothing but a later log entry.
    liveness_patience_s: float = 6.0
    liveness_screen: bool = True
    liveness_screen_threshold: float = 15.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        s = cls()
        for name, low, high in (("threshold", 0.05, 1.5), ("margin", 0.0, 1.0), ("max_fps", 0.1, 60),
                                ("detect_scale", 0.1, 1.0), ("liveness_blink_dip", 0.05, 0.95),
                                ("liveness_parallax", 0.001, 1.0), ("liveness_patience_s", 0.5, 120.0),
                                ("liveness_screen_threshold", 1.5, 10_000.0)):
            value = data.get(name, getattr(s, name))
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in {low}..{high}")
            setattr(s, name, float(value))
        for name in ("k", "n"):
            value = data.get(name, getattr(s, name))
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
                raise ValueError(f"{name} must be 1..50")
            setattr(s, name, value)
        if s.k > s.n:
            raise ValueError("k must be at most n")
        s.liveness = data.get("liveness") is True
        s.liveness_screen = data.get("liveness_screen", True) is True
        return s

    def liveness_params(self) -> dict[str, Any]:
        """The keyword arguments of ``liveness.LivenessParams`` these settings choose."""
        return {"blink_dip": self.liveness_blink_dip, "parallax": self.liveness_parallax,
                "screen": self.liveness_screen, "screen_threshold": self.liveness_screen_threshold}


class Output:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, ev: str, **fields: Any) -> None:
        line = json.dumps({"ev": ev, **fields}, allow_nan=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()


@dataclass
class Frame:
    seq: int
    monotonic: float
    image: npt.NDArray[np.uint8]  # BGR


class Newest:
    """One-frame mailbox between the socket reader and the recogniser; the recogniser's ``get`` also says it
    wants the next frame (the reader then asks the camera for one)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._wanted = True  # the recogniser is ready for a frame that has not been asked for yet
        self._in_flight = False  # asked for, not arrived
        self.received = 0
        self.dropped = 0
        self.face_until = 0.0  # monotonic: until then a face is being followed (the camera is asked to stay awake)

    def wait_wanted(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._wanted)
            self._wanted, self._in_flight = False, True
            return True

    def reset(self) -> None:
        """The feed's connection ended: the next one starts by asking for a frame."""
        with self._cond:
            self._wanted, self._in_flight = True, False
            self._cond.notify_all()

    def put(self, frame: Frame) -> None:
        with self._cond:
            self._in_flight = False
            self.received += 1
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._frame is None and not self._wanted and not self._in_flight:
                self._wanted = True
                self._cond.notify_all()
            self._cond.wait_for(lambda: self._frame is not None, timeout)
            frame, self._frame = self._frame, None
            return frame


def read_frames(conn: socket.socket, mailbox: Newest) -> None:
    """Frames from the camera process: a JSON header line (seq, monotonic, h, w), then h*w*3 bytes of BGR. Each
    is asked for (one byte) when the recogniser is ready for it, so none waits in a buffer behind older ones."""
    stream = conn.makefile("rb")
    while mailbox.wait_wanted():
        conn.sendall(FOLLOWING if time.monotonic() < mailbox.face_until else WANTED)
        header = stream.readline(HEADER_MAX)
        if not header:
            return
        meta = json.loads(header)
        h, w = int(meta["h"]), int(meta["w"])
        size = h * w * 3
        if not (0 < h <= 1080 and 0 < w <= 1920) or size > MAX_FRAME_BYTES:
            raise ValueError("frame size out of range")
        data = stream.read(size)
        if len(data) != size:
            return
        image = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
        mailbox.put(Frame(int(meta["seq"]), float(meta["monotonic"]), image))


class Worker:
    def __init__(self, out: Output) -> None:
        self.out = out
        self.settings = Settings()
        self.mailbox = Newest()
        self.matcher: Matcher | None = None
        self._configured = threading.Event()
        self._reload = threading.Event()
        self._db_path = ""
        self._key: DeviceKey | None = None
        self.socket_path = ""
        self.engine: Any = None
        self.assess: Callable[[Sequence[FaceFrame]], LivenessVerdict] | None = None
        self.frames = 0
        self.faces = 0
        self.matches = 0
        self.unknowns = 0
        self.last_ms = 0.0

    # ---- ops
    def handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                raise ValueError("an op is a JSON object with op")
            op = message["op"]
            if op == "configure":
                self.configure(message)
            elif op == "reload":
                self._reload.set()
            elif op == "status":
                self.out.emit("stats", **self.stats())
            else:
                raise ValueError(f"unknown op {op[:40]!r}")
        except (ValueError, TypeError, KeyError, OSError, RecursionError) as exc:  # deep nesting: RecursionError
            self.out.emit("op_error", message=f"{type(exc).__name__}: {str(exc)[:200]}")

    def configure(self, message: dict[str, Any]) -> None:
        if self._configured.is_set():
            raise ValueError("already configured")
        self.settings = Settings.from_dict(dict(message.get("settings") or {}))
        self._db_path = str(message["db"])
        self._key = DeviceKey(Path(str(message["key"])).read_bytes())
        self.socket_path = str(message["socket"])
        if self.settings.liveness:
            from doorphoned.face import liveness  # type: ignore[attr-defined, unused-ignore]

            params = liveness.LivenessParams(**self.settings.liveness_params())
            self.assess = functools.partial(liveness.assess, params=params)
        self._configured.set()

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "faces": self.faces, "matches": self.matches, "unknowns": self.unknowns,
                "received": self.mailbox.received, "dropped": self.mailbox.dropped,
                "templates": self.matcher.size if self.matcher else 0,
                "users": self.matcher.users if self.matcher else 0, "last_ms": round(self.last_ms, 1)}

    # ---- templates
    def load(self, db: sqlite3.Connection) -> None:
        assert self._key is not None
        started = time.perf_counter()
        self.matcher = Matcher(load_gallery(db, self._key))
        self.out.emit("templates", templates=self.matcher.size, users=self.matcher.users,
                      version=self.matcher.version, ms=round((time.perf_counter() - started) * 1000, 1))

    def refresh(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("SELECT version FROM face_version WHERE id = 1").fetchone()[0])
        if self._reload.is_set() or self.matcher is None or version != self.matcher.version:
            self._reload.clear()
            self.load(db)

    # ---- the loop
    def run(self) -> None:
        self._configured.wait()
        from doorphoned.face.engine import FaceEngine

        self.engine = FaceEngine()
        self.engine.preload(landmarks=self.settings.liveness)
        db = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        self.load(db)
        server = self.listen()  # before "ready": the camera's feed may connect as soon as we say so
        threading.Thread(target=self.serve_frames, args=(server,), name="frames", daemon=True).start()
        self.out.emit("ready", socket=self.socket_path)
        Recogniser(self, db).run()

    def listen(self) -> socket.socket:
        path = Path(self.socket_path)
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(1)
        return server

    def serve_frames(self, server: socket.socket) -> None:
        """Accept the camera process's connection (again after it restarts)."""
        while True:
            conn, _ = server.accept()
            try:
                read_frames(conn, self.mailbox)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                log.warning("frame feed dropped: %s", exc)
            finally:
                conn.close()
                self.mailbox.reset()


class Recogniser:
    """The per-frame work and the vote, on the worker's main thread."""

    def __init__(self, worker: Worker, db: sqlite3.Connection) -> None:
        self.w = worker
        self.db = db
        s = worker.settings
        self.votes = Votes(s.k, s.n)
        self.unknown_frames = 0
        self.reported_unknown = False
        self.unknown_probe: npt.NDArray[np.float32] | None = None
        self.last_face = 0.0
        self.last_face_frame = 0.0  # the capture time (frame.monotonic) of the last frame with a face
        self.seen: deque[FaceFrame] = deque(maxlen=LIVENESS_KEPT)

    def run(self) -> None:
        next_poll = 0.0
        gap = 1.0 / self.w.settings.max_fps
        while True:
            frame = self.w.mailbox.get(POLL_SECONDS)
            now = time.monotonic()
            if now >= next_poll:
                self.w.refresh(self.db)
                next_poll = now + POLL_SECONDS
            if now - self.last_face > GONE_SECONDS:
                self._gone()
            if frame is None:
                continue
            started = time.perf_counter()
            self.look(frame)
            self.w.frames += 1
            self.w.last_ms = (time.perf_counter() - started) * 1000
            time.sleep(max(0.0, gap - (time.perf_counter() - started)))

    def _gone(self) -> None:
        self.votes.clear()
        self.seen.clear()
        self.unknown_frames = 0
        self.reported_unknown = False
        self.unknown_probe = None

    def look(self, frame: Frame) -> None:
        import cv2

        w, s = self.w, self.w.settings
        rgb = np.ascontiguousarray(frame.image[:, :, ::-1])
        scale = s.detect_scale
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        boxes = [tuple(round(v / scale) for v in b) for b in w.engine.locate(small, 1)]
        if not boxes:
            self.votes.add(None)
            return
        if frame.monotonic - self.last_face_frame > GONE_SECONDS:
            self._gone()  # by the frames' own times: a starved worker's late look at a stale frame cannot
            # join two presentations (a print, then a phone) into one liveness window
        self.last_face_frame = frame.monotonic
        self.last_face = time.monotonic()
        w.mailbox.face_until = self.last_face + GONE_SECONDS
        w.faces += 1
        box = boxes[0]  # the largest face: the person at the door, not someone passing behind
        probe = w.engine.encode(rgb, [box])[0]
        assert w.matcher is not None  # loaded before the first frame
        verdict = judge(w.matcher.match(probe), s.threshold, s.margin)
        if s.liveness:
            self.seen.append(self._observe(rgb, box, frame))
        user = self.votes.add(verdict.user)
        age_ms = round((time.monotonic() - frame.monotonic) * 1000, 1)
        if user is not None:
            self._matched(user, verdict.match.best_distance, verdict.match.second_distance, frame.seq, age_ms)
        elif verdict.user is None:
            self._unknown(verdict.match.best_distance, probe, frame.seq)

    def _matched(self, user: str, distance: float, second: float, seq: int, age_ms: float) -> None:
        liveness = ""
        if self.w.assess is not None:
            result = self.w.assess(list(self.seen))
            patience_ms = self.w.settings.liveness_patience_s * 1000
            if not result.live and ("too_few_frames" in result.reasons or self._seen_ms() < patience_ms):
                return  # not live yet: keep watching (the votes and the frames stay) before refusing
            liveness = "" if result.live else (",".join(result.reasons) or "not_live")[:200]
        self.w.matches += 1
        self.w.out.emit("match", user=user, distance=round(distance, 4),
                        second_distance=round(second, 4) if np.isfinite(second) else None,
                        liveness=liveness, seq=seq, age_ms=age_ms)
        self.votes.clear()
        self.seen.clear()

    def _seen_ms(self) -> int:
        return self.seen[-1].at_ms - self.seen[0].at_ms if self.seen else 0

    def _unknown(self, distance: float, probe: npt.NDArray[np.float32], seq: int) -> None:
        """A face seen in N frames without matching: reported once per presence (distance only). Another face
        (its encoding further than the threshold from the last unknown one) is another presence."""
        last = self.unknown_probe
        self.unknown_probe = probe
        if last is not None and float(np.linalg.norm(probe - last)) > self.w.settings.threshold:
            self.unknown_frames, self.reported_unknown = 0, False
        self.unknown_frames += 1
        if self.unknown_frames >= self.w.settings.n and not self.reported_unknown:
            self.reported_unknown = True
            self.w.unknowns += 1
            self.w.out.emit("unknown", distance=round(distance, 4) if np.isfinite(distance) else None, seq=seq)

    def _observe(self, rgb: npt.NDArray[np.uint8], box: tuple[int, ...], frame: Frame) -> FaceFrame:
        import cv2

        from doorphoned.face.screen import screen_score

        top, right, bottom, left = box
        marks = self.w.engine.landmarks(rgb, [box])
        h, w = rgb.shape[:2]
        crop = rgb[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.size else np.zeros((1, 1), np.uint8)
        small = np.asarray(cv2.resize(grey, (CROP_SIDE, CROP_SIDE), interpolation=cv2.INTER_AREA), dtype=np.uint8)
        screen = screen_score(grey) if self.w.settings.liveness_screen else None
        return FaceFrame(marks[0] if marks else {}, FaceBox(top, right, bottom, left), small,
                         int(frame.monotonic * 1000), screen)


def read_ops(worker: Worker) -> None:
    stdin = sys.stdin.buffer
    while line := stdin.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE:
            worker.out.emit("op_error", message="line too long")
            continue
        worker.handle(line)
    os._exit(0)  # the daemon is gone (even by kill -9): so are we


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m doorphoned.face.worker  (ops on stdin, events on stdout)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="face: %(levelname)s %(message)s")
    os.nice(NICE)  # the doors first: on 2 cores a keypad press must not wait behind a face detection
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    out = Output()
    worker = Worker(out)
    threading.Thread(target=read_ops, args=(worker,), name="ops", daemon=True).start()
    out.emit("hello", version=VERSION, pid=os.getpid())
    try:
        worker.run()
    except Exception as exc:
        out.emit("error", message=f"{type(exc).__name__}: {str(exc)[:200]}")
        logging.shutdown()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
