"""The simulated camera: a 640x480 MJPEG stream over HTTP that OpenCV opens by URL.

``cv2.VideoCapture("http://127.0.0.1:PORT/camera.mjpg", cv2.CAP_FFMPEG)`` reads it like an IP
camera's MJPEG endpoint (and the daemon's own MJPEG reader does too). What it shows is a **scene**,
switchable at run time:

- still: grey (``clear``), a QR code, an image file;
- ``move``: an object (a dark disc of ``size`` px) entering from the left and crossing at ``speed`` px/s,
  then the empty grey scene again;
- ``sequence``: the images of a folder (sorted by name), one per frame, looping;
- ``face``: a face made from a photo, ``live`` (blinking, turning a little) or a ``photo`` moved rigidly
  (:mod:`hwsim.faces`);

and on top of any scene, **modes**: a brightness ramp (``ramp``: an offset going linearly from 0 to ``delta``
grey levels over ``seconds``, then held), sensor noise (``noise``: Gaussian, ``sigma`` grey levels, new every
frame) and the stamp (``stamp``: the frame's instant drawn with ``hwsim.stamp``, read back for latency).
Frames go out at ``fps`` (default 15). A still scene without modes is JPEG-encoded once per change and
re-sent as the same bytes (about 0.5% of a core); anything that moves is rendered and encoded each frame.
``off`` stops the stream (clients see it end, as when a camera loses power) until ``on``.

Pitfalls this avoids: ``segno.make`` picks Micro QR for short texts, which neither zbar nor OpenCV
reads (``make_qr`` always makes a full QR); each multipart part carries Content-Length, without
which FFmpeg delivers every frame one period late.
"""

from __future__ import annotations

import io
import math
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import segno

from hwsim import stamp as stamps

WIDTH, HEIGHT, FPS = 640, 480, 15
MAX_SEQUENCE = 600
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
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


class Scene:
    """What the camera looks at; ``frame(t)`` is the picture ``t`` seconds after the scene was chosen
    (callers do not change it). ``moving`` scenes are rendered every frame, still ones once."""

    moving = False

    def __init__(self, picture: np.ndarray, showing: str) -> None:
        self.picture = picture
        self.showing = showing

    def frame(self, t: float) -> np.ndarray:
        return self.picture


class MovingObject(Scene):
    """A dark disc entering from the left edge and crossing the grey scene at ``speed`` px/s."""

    moving = True

    def __init__(self, speed: float, size: int) -> None:
        super().__init__(grey_frame(), f"move (object of {size} px at {speed:g} px/s)")
        self.speed, self.size = speed, size

    def position(self, t: float) -> int | None:
        """The object's centre x at ``t``, or ``None`` once it has left (or before it entered)."""
        x = -self.size / 2 + self.speed * t
        return round(x) if x - self.size / 2 < WIDTH else None

    def frame(self, t: float) -> np.ndarray:
        x = self.position(t)
        if x is None:
            return self.picture
        frame = self.picture.copy()
        cv2.circle(frame, (x, HEIGHT // 2), self.size // 2, (40, 40, 40), -1)
        return frame


class Sequence(Scene):
    """The images of a folder, one per frame at the camera's rate, looping."""

    moving = True

    def __init__(self, folder: Path, fps: int) -> None:
        if not folder.is_dir():
            raise CameraError(f"not a folder: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_SEQUENCE]
        if not files:
            raise CameraError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        self.frames = [image_frame(p) for p in files]
        self.fps = fps
        super().__init__(self.frames[0], f"sequence of {len(files)} images from {folder.name}")

    def frame(self, t: float) -> np.ndarray:
        return self.frames[int(t * self.fps) % len(self.frames)]


class Modes:
    """What is applied on top of any scene: brightness ramp, noise, stamp."""

    def __init__(self) -> None:
        self.ramp: tuple[float, float] | None = None  # (delta grey levels, seconds)
        self.ramp_started = 0.0
        self.noise = 0.0
        self.stamp = False

    @property
    def any(self) -> bool:
        return self.ramp is not None or self.noise > 0 or self.stamp

    def offset(self, now: float) -> float:
        if self.ramp is None:
            return 0.0
        delta, seconds = self.ramp
        return delta * min(1.0, (now - self.ramp_started) / seconds) if seconds > 0 else delta

    def apply(self, picture: np.ndarray, now: float) -> np.ndarray:
        offset = self.offset(now)
        if offset == 0 and self.noise <= 0 and not self.stamp:
            return picture
        frame = picture.astype(np.int16)
        if offset:
            frame += round(offset)
        if self.noise > 0:
            noise = np.empty((frame.shape[0], frame.size // frame.shape[0]), np.int16)  # one channel: every
            # colour gets noise. OpenCV's RNG is per thread and starts from the same seed in each: a frame
            # rendered by a request's new thread and the ticker's first would carry the same noise.
            cv2.setRNGSeed(random.getrandbits(31))
            cv2.randn(noise, np.zeros(1), np.full(1, self.noise))
            frame += noise.reshape(frame.shape)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        if self.stamp:
            stamps.draw(frame, stamps.now_ms(now))
        return frame


class SimCamera:
    def __init__(self, port: int, host: str = "127.0.0.1", stamp: bool = False) -> None:
        self._address = (host, port)
        self._cond = threading.Condition()
        self._jpeg = b""
        self._seq = 0
        self._streaming = False
        self._server: ThreadingHTTPServer | None = None
        self.fps = FPS
        self.modes = Modes()
        self.modes.stamp = stamp
        self.scene = Scene(grey_frame(), "grey")
        self.generation = 0  # scenes set so far: a face scene prepared in a thread yields to a newer scene
        self.scene_started = time.monotonic()
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
        """Show a still picture (a new still scene)."""
        self.set_scene(Scene(frame, showing))

    def set_scene(self, scene: Scene) -> None:
        with self._cond:
            self.scene, self.scene_started, self.showing = scene, time.monotonic(), scene.showing
            self.generation += 1
        self._render(time.monotonic())

    def render(self, now: float) -> np.ndarray:
        """The picture at ``now`` (scene plus modes): what the next frame sent carries."""
        return self.modes.apply(self.scene.frame(now - self.scene_started), now)

    def _render(self, now: float) -> None:
        """Render and publish the picture at ``now``. A rendering of a scene replaced meanwhile is dropped: the
        ticker rendering a slow scene (a face on a screen: ~50 ms) while ``set_scene`` publishes the next one
        would otherwise overwrite it, and a still next scene (``clear``) would show the old one frozen."""
        with self._cond:
            generation = self.generation
        ok, encoded = cv2.imencode(".jpg", self.render(now), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise CameraError("JPEG encoding failed")
        with self._cond:
            if generation != self.generation:
                return
            self._jpeg, self._seq = encoded.tobytes(), self._seq + 1
            self._cond.notify_all()

    @property
    def moving(self) -> bool:
        return self.scene.moving or self.modes.any

    def describe(self) -> dict[str, object]:
        modes = self.modes
        return {"url": self.url, "on": self.on, "showing": self.showing, "fps": self.fps,
                "ramp": list(modes.ramp) if modes.ramp else None, "noise": modes.noise, "stamp": modes.stamp}

    def show_qr(self, text: str) -> None:
        try:
            self.publish(qr_frame(text), f"qr ({len(text)} characters)")
        except (ValueError, segno.DataOverflowError) as exc:
            raise CameraError(f"cannot make a QR code of that text: {exc}") from exc

    def show_image(self, path: Path) -> None:
        self.publish(image_frame(path), f"image {path.name}")

    def clear(self) -> None:
        self.publish(grey_frame(), "grey")

    def show_moving(self, speed: float, size: int) -> None:
        if not (math.isfinite(speed) and 1 <= speed <= 10_000) or not 4 <= size <= HEIGHT:
            raise CameraError(f"speed must be 1-10000 px/s and size 4-{HEIGHT} px")
        self.set_scene(MovingObject(speed, size))

    def show_sequence(self, folder: Path) -> None:
        self.set_scene(Sequence(folder, self.fps))

    def face_scene(self, kind: str, path: Path, face_width: int = 200, screen: bool = False) -> Scene:
        """A face scene (``live`` or ``photo``) made from a photo: see :mod:`hwsim.faces`. Finding the face
        takes about half a second the first time (seconds on a loaded machine): callers on an event loop run
        this in a thread, then :meth:`set_scene`."""
        from hwsim import faces  # imports face_recognition when first used

        if kind not in ("live", "photo"):
            raise CameraError("face scene must be live or photo")
        face = faces.framed(path, face_width)
        if kind == "live":
            return faces.ScreenLiveFace(face) if screen else faces.LiveFace(face)
        return faces.PhotoFace(face, screen)

    def set_fps(self, fps: int) -> None:
        if not 1 <= fps <= 60:
            raise CameraError("fps must be 1-60")
        self.fps = fps
        if isinstance(self.scene, Sequence):
            self.scene.fps = fps

    def set_ramp(self, delta: float, seconds: float) -> None:
        """A brightness ramp from now: 0 to ``delta`` grey levels over ``seconds`` (delta 0: none)."""
        if not (math.isfinite(delta) and -255 <= delta <= 255 and math.isfinite(seconds) and 0 <= seconds <= 3600):
            raise CameraError("ramp delta must be -255..255 grey levels and seconds 0-3600")
        self.modes.ramp = (delta, seconds) if delta else None
        self.modes.ramp_started = time.monotonic()
        self._render(time.monotonic())

    def set_noise(self, sigma: float) -> None:
        if not (math.isfinite(sigma) and 0 <= sigma <= 100):
            raise CameraError("noise sigma must be 0-100 grey levels")
        self.modes.noise = sigma
        self._render(time.monotonic())

    def set_stamp(self, on: bool) -> None:
        self.modes.stamp = on
        self._render(time.monotonic())

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
        """Send a frame at a steady rate, like a camera: the same bytes again for a still scene, a new
        rendering when something moves (an object, a ramp, noise, the stamp)."""
        due = time.monotonic()
        while self._streaming:
            due += 1.0 / self.fps
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - 1.0)  # a stalled machine does not make up with a burst
            if self.moving:
                try:
                    self._render(time.monotonic())
                    continue
                except CameraError:
                    pass
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
