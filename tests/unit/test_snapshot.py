"""Captures without OpenCV in the daemon: the daemon's capture store imports no cv2, the camera process's
``snapshot`` op writes a current picture only to a capture temp file, and ``CaptureStore.take_snapshot``
turns its reply into a kept capture (file 0600, row) or refuses with nothing kept."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from doorphoned.camera import capture_ops
from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.captures import CaptureSettings, CaptureStore
from doorphoned.camera.process import CameraProcess
from doorphoned.core.frames import Frame
from doorphoned.core.store import DB_NAME, Store
from tests.procs import wait_for


class Recorded:
    """The process's stdout as decoded events (from any thread)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def emit(self, ev: str, **fields: Any) -> None:
        with self.lock:
            self.events.append({"ev": ev, **fields})

    def reply(self, req: int) -> dict[str, Any] | None:
        with self.lock:
            return next((e for e in self.events if e.get("req") == req), None)


class Camera:
    """A camera process in this test (its ops, hub and activity gate) and a thread playing the capture:
    it publishes a frame whenever the gate is active, as the real capture does."""

    def __init__(self) -> None:
        self.out = Recorded()
        self.process = CameraProcess(self.out)  # type: ignore[arg-type]
        capture_ops.register(self.process)
        self.stop = threading.Event()
        self.image = np.full((48, 64, 3), 90, np.uint8)
        threading.Thread(target=self._capture, daemon=True).start()
        self.req = 0

    def _capture(self) -> None:
        seq = 0
        while not self.stop.is_set():
            if self.process.activity.active():
                seq += 1
                self.process.hub.publish(Frame(seq, time.monotonic(), self.image.copy()))
            time.sleep(0.02)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """``CameraFeature.request`` over this process: the reply's fields or a RuntimeError."""
        self.req += 1
        req = self.req
        self.process.handle(json.dumps({"op": op, "req": req, **fields}).encode() + b"\n")
        while (reply := self.out.reply(req)) is None:
            await asyncio.sleep(0.01)
        if reply["ok"] is not True:
            raise RuntimeError(reply["message"])
        return {k: v for k, v in reply.items() if k not in ("ev", "req", "ok")}


@pytest.fixture
def camera() -> Any:
    cam = Camera()
    yield cam
    cam.stop.set()


def open_store(tmp_path: Path, **settings: Any) -> CaptureStore:
    store = Store(tmp_path / DB_NAME)
    store.open()
    captures = CaptureStore(tmp_path, store, CaptureSettings(min_free_bytes=0, **settings))
    captures.open()
    return captures


def test_the_daemons_capture_store_does_not_load_opencv() -> None:
    code = ("import sys, doorphoned.camera.captures, doorphoned.camera.feature; "
            "sys.exit('cv2' in sys.modules or 'numpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_snapshot_wakes_the_idle_camera_and_becomes_a_private_capture_with_its_row(tmp_path: Path,
                                                                                    camera: Camera) -> None:
    captures = open_store(tmp_path)
    assert not camera.process.activity.active()  # idle: no frame would come without the wake
    taken = asyncio.run(captures.take_snapshot(camera.request, "granted", door=2, log_id=7))
    path = captures.dir / taken.file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == taken.size
    assert (taken.width, taken.height, taken.trigger, taken.door, taken.log_id) == (64, 48, "granted", 2, 7)
    image = cv2.imdecode(np.frombuffer(captures.read(taken.id), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3)
    assert captures.get(taken.id) == taken and sorted(os.listdir(captures.dir)) == [taken.file]


@pytest.mark.parametrize("path", ["relative/captures/.20260101T000000-0123abcd.jpg.tmp",
                                  "{d}/captures/../captures/.20260101T000000-0123abcd.jpg.tmp",
                                  "{d}/captures/20260101T000000-0123abcd.jpg",
                                  "{d}/other/.20260101T000000-0123abcd.jpg.tmp",
                                  "{d}/captures/.20260101T000000-0123abcd.jpg.tmp\u202e", "/etc/passwd", ""])
def test_a_snapshot_to_anywhere_but_a_capture_temp_file_is_refused_and_writes_nothing(
        tmp_path: Path, camera: Camera, path: str) -> None:
    (tmp_path / "captures").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(RuntimeError, match="path"):
        asyncio.run(camera.request("snapshot", path=path.format(d=tmp_path)))
    assert os.listdir(tmp_path / "captures") == [] and os.listdir(tmp_path / "other") == []


def test_a_snapshot_never_overwrites_an_existing_file(tmp_path: Path, camera: Camera) -> None:
    target = tmp_path / "captures" / ".20260101T000000-0123abcd.jpg.tmp"
    target.parent.mkdir()
    target.write_bytes(b"keep")
    with pytest.raises(RuntimeError, match="snapshot file"):
        asyncio.run(camera.request("snapshot", path=str(target)))
    assert target.read_bytes() == b"keep"


def test_no_picture_or_a_refused_request_keeps_nothing(tmp_path: Path, camera: Camera,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    captures = open_store(tmp_path)
    monkeypatch.setattr(capture_ops, "SNAPSHOT_WAIT", 0.2)
    camera.stop.set()  # the capture is gone: no frame comes
    with pytest.raises(CaptureError, match="no picture"):
        asyncio.run(captures.take_snapshot(camera.request, "manual"))
    with pytest.raises(CaptureError, match="door must be"):
        asyncio.run(captures.take_snapshot(camera.request, "manual", door=0))
    assert os.listdir(captures.dir) == [] and captures.recent() == []


def test_a_reply_that_does_not_match_the_file_keeps_nothing(tmp_path: Path) -> None:
    captures = open_store(tmp_path)

    async def lying(op: str, **fields: Any) -> dict[str, Any]:
        Path(fields["path"]).write_bytes(b"x" * 10)
        return {"size": 11, "width": 4, "height": 4}

    with pytest.raises(CaptureError, match="does not match"):
        asyncio.run(captures.take_snapshot(lying, "manual"))
    assert os.listdir(captures.dir) == [] and captures.recent() == []


def test_retention_holds_after_snapshots(tmp_path: Path, camera: Camera) -> None:
    captures = open_store(tmp_path, keep_count=3)
    for _ in range(6):
        asyncio.run(captures.take_snapshot(camera.request, "motion"))
    wait_for(lambda: len(os.listdir(captures.dir)) == 3, 5)
    assert len(captures.recent()) == 3
