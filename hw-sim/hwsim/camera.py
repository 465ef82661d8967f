"""The simulated camera: a 640x480 MJPEG stream over HTTP that OpenCV opens by URL.

``cv2.VideoCapture("http://127.0.0.1:PORT/camera.mjpg", cv2.CAP_FFMPEG)`` reads it like an IP
camera's MJPEG endpoint. The picture is grey, a QR code, or an image file, switchable at run time;
the current frame is JPEG-encoded once per change and re-sent at 15 fps (about 0.5% of a core).
``off`` stops the stream (clients see it end, as when a camera loses power) until ``on``.

Pitfalls this avoids: ``segno.make`` picks Micro QR for short texts, which neither zbar nor OpenCV
reads (``make_qr`` always makes a full QR); each multipart part carries Content-Length, without
which FFmpeg delivers every frame one period late.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import segno

WIDTH, HEIGHT, FPS = 640, 480, 15
BOUNDARY = "hwsimframe"
PATH = "/camera.mjpg"


class CameraError(ValueError):
    pass


def grey_frame() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), 128, np.uint8)


def qr_frame(text: str, size: int = 300) -> np.ndarray:
    buffer = io.BytesIO()
    segno.make_qr(text, error="m").save(buffer, kind="png", scale=8, border=4)
    qr = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    if qr is None:
        raise CameraError("could not render the QR code")
    frame = grey_frame()
    y, x = (HEIGHT - size) // 2, (WIDTH - size) // 2
    frame[y:y + size, x:x + size] = cv2.resize(qr, (size, size), interpolation=cv2.INTER_NEAREST)
    return frame


def image_frame(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CameraError(f"cannot read image {path}")
    scale = min(WIDTH / image.shape[1], HEIGHT / image.shape[0])
    width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    frame = grey_frame()
    y, x = (HEIGHT - height) // 2, (WIDTH - width) // 2
    frame[y:y + height, x:x + width] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return frame


class SimCamera:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._address = (host, port)
        self._cond = threading.Condition()
        self._jpeg = b""
        self._seq = 0
        self._streaming = False
        self._server: ThreadingHTTPServer | None = None
        self.showing = "grey"
        self.publish(grey_frame(), "grey")

    @property
    def url(self) -> str:
        host, port = self._address
        return f"http://{host}:{port}{PATH}"

    @property
    def on(self) -> bool:
        return self._server is not None

    def publish(self, frame: np.ndarray, showing: str) -> None:
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise CameraError("JPEG encoding failed")
        with self._cond:
            self._jpeg, self._seq = encoded.tobytes(), self._seq + 1
            self.showing = showing
            self._cond.notify_all()

    def show_qr(self, text: str) -> None:
        try:
            self.publish(qr_frame(text), f"qr ({len(text)} characters)")
        except (ValueError, segno.DataOverflowError) as exc:
            raise CameraError(f"cannot make a QR code of that text: {exc}") from exc

    def show_image(self, path: Path) -> None:
        self.publish(image_frame(path), f"image {path.name}")

    def clear(self) -> None:
        self.publish(grey_frame(), "grey")

    # ---- lifecycle
    def start(self) -> None:
        if self._server is not None:
            return
        self._server = ThreadingHTTPServer(self._address, _handler(self))
        self._server.daemon_threads = True
        self._address = (self._address[0], int(self._server.server_address[1]))  # a free port stays across off/on
        self._streaming = True
        threading.Thread(target=self._tick, name="camera-tick", daemon=True).start()
        threading.Thread(target=self._server.serve_forever, args=(0.1,), name="camera-http", daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        self._streaming = False
        with self._cond:
            self._cond.notify_all()
        if server is not None:
            server.shutdown()
            server.server_close()

    def _tick(self) -> None:
        """Re-send the current frame at a steady rate, like a camera."""
        period, due = 1.0 / FPS, time.monotonic()
        while self._streaming:
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
            with self._cond:
                self._seq += 1
                self._cond.notify_all()

    def frames(self) -> Iterator[bytes]:
        sent = -1
        while self._streaming:
            with self._cond:
                self._cond.wait_for(lambda last=sent: self._seq != last or not self._streaming, 1.0)  # type: ignore[misc]
                sent, jpeg = self._seq, self._jpeg
            if self._streaming:
                yield jpeg


def _handler(camera: SimCamera) -> Any:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the stream ends when the connection closes

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?")[0] != PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                for jpeg in camera.frames():
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg + b"\r\n")
                    self.wfile.flush()
            except OSError:
                pass  # the client went away

    return Handler
