"""The camera process's ``face-feed`` op: the hub's frames to the face recognition worker's Unix socket.

The worker (``doorphoned.face.worker``, a process of its own: dlib holds the GIL for ~100 ms a frame and
would stall this process's capture and consumers) listens on a socket the daemon names; this thread
subscribes to the hub like any consumer, so it gets frames only while the capture is active (a change of
picture, motion, a wake input) and only the newest one. The worker asks for each frame (one byte on the
socket, when it is ready for the next): a frame is sent only then, so it never waits in a socket buffer behind
older ones (a frame's age at the worker is its transfer time, not a queue), at most ``max_fps`` a second: a
JSON header line (``seq``, ``monotonic``, ``h``, ``w``) and the BGR bytes. A request sent while the worker follows a
face (``F``) keeps the capture active a while: without it a face that stopped changing the picture would get no
more frames, and a loaded worker would never see the K frames its decision needs. A worker that is not there
(starting, restarting) is connected to again every second; a slow one only makes this thread skip frames.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from doorphoned.camera import protocol

if TYPE_CHECKING:
    from doorphoned.camera.process import CameraProcess

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
IDLE_WAIT = 5.0
FOLLOWING = b"F"  # the worker's request while it follows a face (doorphoned.face.worker.FOLLOWING)
FOLLOW_SECONDS = 3.0  # how long one such request keeps the capture active


class FaceFeed:
    def __init__(self, process: CameraProcess) -> None:
        self._process = process
        self.path = ""
        self.max_fps = 4.0
        self.sent = 0
        self._thread: threading.Thread | None = None

    def op(self, message: dict[str, Any]) -> dict[str, Any]:
        """Set the socket and rate (again after a worker restart: the thread reconnects by itself)."""
        self.path = protocol.text(message, "socket", limit=200)
        self.max_fps = protocol.number(message, "max_fps", 4.0, 0.1, 30)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="face-feed", daemon=True)
            self._thread.start()
        return {"socket": self.path}

    def _run(self) -> None:
        subscription = self._process.hub.subscribe("face")
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.connect(self.path)
                    self._send_frames(subscription, conn)
            except OSError:
                time.sleep(RETRY_SECONDS)

    def _send_frames(self, subscription: Any, conn: socket.socket) -> None:
        while True:
            request = conn.recv(1)  # the worker's request for a frame; b"" = it closed the connection
            if not request:
                return
            if request == FOLLOWING:  # a face in view: frames keep coming until a decision, not only on change
                self._process.activity.wake(FOLLOW_SECONDS)
            frame = None
            while frame is None:
                frame = subscription.get(IDLE_WAIT)
            started = time.monotonic()
            image = frame.image
            header = json.dumps({"seq": frame.seq, "monotonic": frame.monotonic, "h": image.shape[0],
                                 "w": image.shape[1]}).encode() + b"\n"
            conn.sendall(header + image.tobytes())
            self.sent += 1
            time.sleep(max(0.0, 1.0 / self.max_fps - (time.monotonic() - started)))


def register(process: CameraProcess) -> None:
    feed = FaceFeed(process)
    process.ops["face-feed"] = feed.op
