"""The screen cue in the real recognition worker process: hw-sim's scenes rendered as the camera sends them
(640x480, JPEG 85, decoded to BGR) written to the worker's frame socket the way the camera process's feed does
(one frame per request byte), a real SQLite store with the user enrolled from obama.jpg.

Fewer processes than the unit test in test_face_liveness.py (no daemon, camera process or hw-sim server), so it
still decides on a loaded machine where the full unit's worker gets too few frames: a print is refused without
`screen`, a video replayed on a screen is refused `screen`; with ``[face] liveness_screen = false`` (through
``worker_settings()``, as the daemon passes it) the same replayed video passes the liveness check.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from doorphoned.core.devicekey import DeviceKey
from doorphoned.core.store import Store
from doorphoned.face.config import FaceConfig
from doorphoned.face.engine import FaceEngine
from doorphoned.face.enrol import enrol_photo
from doorphoned.face.imagecheck import QualityLimits
from doorphoned.face.store import FaceStore
from tests.facephotos import photos

pytestmark = pytest.mark.slow

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # the enrolment's timestamp only (nothing compares it with the clock)
DECISION_S = 150  # a loaded 2-core machine: ~1 frame a second, 6 s of patience, 3 s of cooldown


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    """A store holding one user, "barack", enrolled from obama.jpg."""
    folder = tmp_path_factory.mktemp("facestore")
    key = DeviceKey.load_or_create(folder / "device.key")
    db = Store(folder / "doorphoned.db")
    db.open()
    db.db.execute("BEGIN")
    db.db.execute("INSERT INTO users (id, name, created, updated) VALUES ('barack', 'Barack', ?, ?)",
                  (NOW.isoformat(), NOW.isoformat()))
    template = enrol_photo(FaceEngine(), (photos() / "obama.jpg").read_bytes(), QualityLimits()).template
    FaceStore(db, key).add("barack", [tuple(template.tolist())], "local", NOW)  # joins the transaction
    db.db.execute("COMMIT")
    db.close()
    return folder / "doorphoned.db", folder / "device.key"


class Worker:
    """``python -m doorphoned.face.worker`` configured as the daemon configures it; its events on a queue."""

    def __init__(self, store: tuple[Path, Path], config: FaceConfig, folder: Path) -> None:
        self.socket_path = folder / "frames.sock"
        self.proc = subprocess.Popen([sys.executable, "-m", "doorphoned.face.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert self.proc.stdin is not None
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.proc.stdin.write(json.dumps({"op": "configure", "db": str(store[0]), "key": str(store[1]),
                                          "socket": str(self.socket_path),
                                          "settings": config.worker_settings()}).encode() + b"\n")
        self.proc.stdin.flush()
        self.wait_for("ready", 120)
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.connect(str(self.socket_path))
        self.seq = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"{"):
                self.events.put(json.loads(line))

    def wait_for(self, ev: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert event["ev"] not in ("error", "op_error"), event
            if event["ev"] == ev:
                return event
        raise AssertionError(f"no {ev} from the worker within {timeout} s")

    def show_until_match(self, scene, timeout: float = DECISION_S) -> dict:
        """Frames of ``scene`` at its own clock, each when the worker asks, until a ``match``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.conn.settimeout(timeout)
            assert self.conn.recv(1), "the worker closed the frame socket"
            _, data = cv2.imencode(".jpg", scene.frame(time.monotonic() - started), [cv2.IMWRITE_JPEG_QUALITY, 85])
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            self.seq += 1
            header = json.dumps({"seq": self.seq, "monotonic": time.monotonic(), "h": image.shape[0],
                                 "w": image.shape[1]})
            self.conn.sendall(header.encode() + b"\n" + np.ascontiguousarray(image).tobytes())
            while not self.events.empty():
                event = self.events.get_nowait()
                if event["ev"] == "match":
                    return event
        raise AssertionError(f"no decision within {timeout} s")

    def leave(self) -> None:
        """The face goes (grey frames for 3 s): the worker's presence and its frames end."""
        grey = np.full((480, 640, 3), 128, np.uint8)
        until = time.monotonic() + 3
        while time.monotonic() < until:
            assert self.conn.recv(1)
            self.seq += 1
            self.conn.sendall(json.dumps({"seq": self.seq, "monotonic": time.monotonic(), "h": 480, "w": 640})
                              .encode() + b"\n" + grey.tobytes())
        while not self.events.empty():
            self.events.get_nowait()

    def close(self) -> None:
        self.conn.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def worker_with(store, tmp_path) -> Iterator:
    started: list[Worker] = []

    def make(**keys) -> Worker:
        started.append(Worker(store, FaceConfig(enabled=True, liveness="on", **keys), tmp_path))
        return started[-1]

    yield make
    for w in started:
        w.close()


@pytest.fixture(scope="module")
def face():
    from hwsim import faces

    return faces, faces.framed(photos() / "obama3.jpg", 200)


def test_the_worker_refuses_a_print_without_screen_and_a_replayed_video_for_the_screen(worker_with, face):
    faces, framed = face
    w = worker_with()
    printed = w.show_until_match(faces.PhotoFace(framed, False))
    assert printed["user"] == "barack" and printed["liveness"].startswith("no_blink,"), printed
    assert "screen" not in printed["liveness"]
    w.leave()
    replayed = w.show_until_match(faces.ScreenLiveFace(framed))
    assert replayed["user"] == "barack" and replayed["liveness"].endswith("screen"), replayed


def test_with_the_screen_key_off_the_replayed_video_passes_liveness(worker_with, face):
    """The key takes effect, and shows what the cue is for: blinks and turns fool the other two cues."""
    faces, framed = face
    w = worker_with(liveness_screen=False, liveness_patience_s=10.0)
    replayed = w.show_until_match(faces.ScreenLiveFace(framed))
    assert (replayed["user"], replayed["liveness"]) == ("barack", ""), replayed
