"""The daemon side of face recognition: supervise the worker process, present its matches to the gate.

The daemon never loads dlib. This feature starts ``python -m doorphoned.face.worker``, sends it where the
store and the device key are, the frame socket's path and the ``[face]`` settings, then tells the camera
process (``face-feed`` op, again each time either process comes up) to feed the socket. A ``match`` event
becomes a :class:`FaceMatch` presented to the gate for ``[face] doors`` (the user's doors and schedule
apply there, and the door log gets the distance; a capture follows the ``granted``/``refused`` capture
triggers, linked by the log id); an ``unknown`` one a refused :class:`FaceMatch` without a user. A user
is presented again only after ``cooldown_s``. A worker that exits is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import CameraStateChanged, FaceTemplatesChanged
from doorphoned.core.feature import Feature
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import FaceMatch
from doorphoned.face.config import FaceConfig

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 120.0  # Python, numpy and the worker's imports on a loaded 2-core unit
MAX_LINE = 64 * 1024
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STOP_SECONDS = 3.0
USER_ID_MAX = 64


class FaceFeature(Feature):
    name = "face"

    def __init__(self, config: FaceConfig, gate: Gate, bus: EventBus, clock: Clock, db_path: Path, key_path: Path,
                 socket_path: Path, camera: Callable[[], Any]) -> None:
        super().__init__(clock)
        self.config = config
        self.gate = gate
        self.bus = bus
        self.db_path = db_path
        self.key_path = key_path
        self.socket_path = socket_path
        self._camera = camera
        self.state = "starting"
        self.error = ""
        self.pid: int | None = None
        self.stats: dict[str, Any] = {"templates": 0, "users": 0}
        self.matches = 0
        self.unknowns = 0
        self.presented = 0
        self._ready = False
        self._stdin: asyncio.StreamWriter | None = None
        self._last: dict[str | None, float] = {}

    async def start(self) -> None:
        self.on_stop(self.bus.subscribe(CameraStateChanged, self._on_camera, self.name))
        self.on_stop(self.bus.subscribe(FaceTemplatesChanged, lambda _event: self.reload(), self.name))
        self.spawn(self._supervise(), "worker")

    async def stop_feature(self) -> None:
        self.state = "stopped"

    def reload(self) -> None:
        """The templates changed (enrolment, removal): the worker reads them again now."""
        self._send("reload")

    def _send(self, op: str, **fields: Any) -> bool:
        if self._stdin is None or self._stdin.is_closing():
            return False
        self._stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        return True

    def _on_camera(self, event: CameraStateChanged) -> None:
        if event.up:
            self._feed()

    def _feed(self) -> None:
        """Have the camera process feed the worker's socket (both must be up; each coming up asks again)."""
        camera = self._camera()
        if camera is not None and self._ready:
            camera.send("face-feed", socket=str(self.socket_path), max_fps=self.config.max_fps)

    # ---- the worker
    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                healthy = self.state == "ok"
                self.state, self.error = "fault", f"{type(exc).__name__}: {str(exc)[:200]}"
                log.error("face worker fault: %s; retrying in %.1f s", self.error, delay)
                if healthy:
                    delay = BACKOFF_FIRST
            self._ready = False
            await self.clock.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "doorphoned.face.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=MAX_LINE + 1,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})  # 2 cores: one BLAS thread
        self.pid = proc.pid
        assert proc.stdin is not None and proc.stdout is not None
        try:
            hello = _decode(await asyncio.wait_for(proc.stdout.readline(), HELLO_TIMEOUT))
            if hello.get("ev") != "hello":
                raise ConnectionError("the face worker did not say hello")
            self._stdin = proc.stdin
            self._send("configure", db=str(self.db_path), key=str(self.key_path), socket=str(self.socket_path),
                       settings=self.config.worker_settings())
            while line := await proc.stdout.readline():
                self._event(_decode(line))
            raise ConnectionError(f"the face worker exited with status {await proc.wait()}")
        finally:
            self._stdin, self.pid, self._ready = None, None, False
            await _stop(proc)

    def _event(self, message: dict[str, Any]) -> None:
        ev = message.get("ev")
        if ev == "ready":
            self.state, self.error, self._ready = "ok", "", True
            log.log(25, "face recognition ready")
            self._feed()
        elif ev == "match":
            self._on_match(message)
        elif ev == "unknown":
            self._on_unknown(message)
        elif ev in ("templates", "stats"):
            self.stats.update({k: v for k, v in message.items() if k in ("templates", "users", "frames", "faces",
                                                                        "dropped", "last_ms", "ms")
                               and isinstance(v, int | float) and not isinstance(v, bool)})
        elif ev == "error":
            raise ConnectionError(str(message.get("message", "face worker failed"))[:300])
        elif ev == "op_error":
            log.warning("face worker refused an op: %s", str(message.get("message", ""))[:200])

    def _on_match(self, message: dict[str, Any]) -> None:
        user, distance = message.get("user"), _distance(message.get("distance"))
        if not isinstance(user, str) or not 0 < len(user) <= USER_ID_MAX or distance is None:
            log.warning("face: a match without a valid user or distance ignored")
            return
        liveness = message.get("liveness")
        liveness = liveness[:200] if isinstance(liveness, str) else ""
        self.matches += 1
        self._present(FaceMatch(user, distance, liveness=liveness), user)

    def _on_unknown(self, message: dict[str, Any]) -> None:
        self.unknowns += 1
        distance = _distance(message.get("distance"))
        self._present(FaceMatch(None, distance if distance is not None else math.nan), None)

    def _present(self, face: FaceMatch, key: str | None) -> None:
        now = self.clock.monotonic()
        if now - self._last.get(key, -math.inf) < self.config.cooldown_s:
            return
        self._last[key] = now
        self.presented += 1
        self.spawn(self.gate.present(face, list(self.config.doors)), "present")

    def status(self) -> dict[str, Any]:
        return {"face": self.state, "face_error": self.error, "worker_pid": self.pid, "matches": self.matches,
                "unknown_faces": self.unknowns, "presented": self.presented, **self.stats}


def _distance(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 10:
        return None
    return float(value)


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise ConnectionError("the face worker sent a line that is not a JSON object")
    return message


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
