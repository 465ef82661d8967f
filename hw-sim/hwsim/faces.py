"""Face scenes for the simulated camera: a "live" face and a "photo" face made from one still picture.

Both start from the same framing: the photo's largest face, found with face_recognition (imported only
here, only when a face scene is chosen), scaled so the face box is ``face_width`` px wide and centred in
the 640x480 frame, as a visitor stands in front of a door unit. Then, ``t`` seconds into the scene:

- **live** (:class:`LiveFace`): what one RGB camera sees of a real person standing still. The eyelids close
  for a few frames every couple of seconds (each upper lid is slid down over the eye by a vertical warp
  of the skin above it, placed with the photo's own eye landmarks), and the head turns a little (yaw and
  pitch of a few degrees): every pixel moves by its *depth* times the angle, the depth being an ellipsoid
  over the face plus a bump at the nose. That is parallax: the nose moves more than the cheeks, the face
  outline hardly at all, which no rigid or perspective move of a flat picture produces.
- **photo** (:class:`PhotoFace`): the same picture moved rigidly in the image plane (translation, rotation,
  a slight scale), as a held-up print or phone screen moves; eyes never close. ``screen`` adds an
  RGB-subpixel grid to the picture before it is moved, whose resampling makes the moire a camera sees
  on a phone screen.

Both add their own sensor noise (new each frame). The motion is a deterministic function of ``t``, so a
test reading the stream sees the same kind of sequence at any speed.
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hwsim.camera import HEIGHT, WIDTH, CameraError, Scene

DETECT_SIDE = 1000  # the photo is searched at most this big (HOG on a 3 MP photo takes seconds)
NOISE_SIGMA = 2.5  # grey levels, the scene's own sensor noise
BLINK_PERIOD = 2.4  # s between blinks
BLINK_CLOSING, BLINK_CLOSED, BLINK_OPENING = 0.09, 0.22, 0.12  # s: ~430 ms a blink (~6 frames at 15 fps)
YAW_DEGREES, YAW_PERIOD = 7.0, 3.1  # the head turns +-7 degrees, about every 3 s
PITCH_DEGREES, PITCH_PERIOD = 3.5, 4.3
SCREEN_PITCH = 1.35  # camera pixels per screen pixel: near the camera's sampling, where a grid aliases
SCREEN_DEGREES = 3.0  # the screen's tilt: the grid's beat with the sensor's rows and columns (moire)
SCREEN_BEZEL = 14  # px of dark bezel around the screen
SCREEN_BLUR = 0.7  # px (Gaussian sigma): the lens's blur of the screen (defocus, optics)
SCREEN_BEZEL_GREY, SCREEN_ROOM_GREY, SCREEN_BLACK = 22.0, 70.0, 14.0  # grey levels: bezel, the room behind, black
SCREEN_GAIN, SCREEN_GLARE = 2.6, 55.0  # the screen's brightness (x its lit share); a reflection's grey levels

Floats = np.ndarray  # float32 images (cv2 returns untyped arrays)
Image = np.ndarray  # uint8 BGR


@dataclass(frozen=True)
class FramedFace:
    """The photo placed in the frame: the picture (640x480 BGR), its face box (top, right, bottom,
    left) and the face's landmark points (face_recognition's names) in frame pixels."""

    picture: Image
    box: tuple[int, int, int, int]
    landmarks: dict[str, np.ndarray]
    name: str


_FRAMED: dict[tuple[str, float, int], FramedFace] = {}  # (path, mtime, width): detection takes ~0.5 s
_FRAMED_KEPT = 8


def framed(path: Path, face_width: int) -> FramedFace:
    """:func:`frame_face`, remembered for the same file (unchanged) and width."""
    try:
        key = (str(path.resolve()), path.stat().st_mtime, face_width)
    except OSError as exc:
        raise CameraError(f"cannot read image {path}: {exc.strerror}") from None
    if key not in _FRAMED:
        while len(_FRAMED) >= _FRAMED_KEPT:
            _FRAMED.pop(next(iter(_FRAMED)))
        _FRAMED[key] = frame_face(path, face_width)
    return _FRAMED[key]


def frame_face(path: Path, face_width: int) -> FramedFace:
    """Find the photo's largest face and place it, ``face_width`` px wide, in the middle of the frame."""
    if not 40 <= face_width <= 400:
        raise CameraError("face width must be 40-400 px")
    photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if photo is None:
        raise CameraError(f"cannot read image {path}")
    fr = _face_recognition()
    shrink = min(1.0, DETECT_SIDE / max(photo.shape[:2]))
    small = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else photo
    boxes = fr.face_locations(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    if not boxes:
        raise CameraError(f"no face found in {path.name}")
    top, right, bottom, left = max(boxes, key=lambda b: (b[1] - b[3]) * (b[2] - b[0]))
    scale = face_width / ((right - left) / shrink)
    cx, cy = (left + right) / 2 / shrink, (top + bottom) / 2 / shrink
    matrix = np.array([[scale, 0, WIDTH / 2 - scale * cx], [0, scale, HEIGHT * 0.45 - scale * cy]])
    picture = cv2.warpAffine(photo, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_AREA, borderValue=(128, 128, 128))
    half_w, half_h = face_width / 2, face_width * (bottom - top) / (right - left) / 2
    box = (round(HEIGHT * 0.45 - half_h), round(WIDTH / 2 + half_w), round(HEIGHT * 0.45 + half_h),
           round(WIDTH / 2 - half_w))
    found = fr.face_landmarks(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), [box])
    if not found or "left_eye" not in found[0]:
        raise CameraError(f"no face landmarks in {path.name}")
    points = {name: np.asarray(pts, np.float64) for name, pts in found[0].items()}
    return FramedFace(picture, box, points, path.name)


def _face_recognition() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models: "pkg_resources is deprecated"
            return importlib.import_module("face_recognition")
    except ImportError as exc:
        raise CameraError(f"face scenes need face_recognition installed (make setup): {exc}") from None


def _noisy(picture: Image, rng: np.random.Generator) -> Image:
    noise = rng.normal(0.0, NOISE_SIGMA, picture.shape[:2]).astype(np.float32)[:, :, None]
    noisy: Image = np.clip(picture.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return noisy


class LiveFace(Scene):
    """A face that blinks and turns its head a little (see the module docstring)."""

    moving = True

    def __init__(self, face: FramedFace) -> None:
        super().__init__(face.picture, f"face live {face.name}")
        self.face = face
        self.rng = np.random.default_rng()
        self.grid_y, self.grid_x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        self.depth = _depth_map(face, self.grid_x, self.grid_y)

    def closure(self, t: float) -> float:
        """How far the eyelids are closed at ``t`` (0 open, 1 shut)."""
        phase = t % BLINK_PERIOD - (BLINK_PERIOD - BLINK_CLOSING - BLINK_CLOSED - BLINK_OPENING)
        if phase < 0:
            return 0.0
        if phase < BLINK_CLOSING:
            return phase / BLINK_CLOSING
        if phase < BLINK_CLOSING + BLINK_CLOSED:
            return 1.0
        return max(0.0, 1.0 - (phase - BLINK_CLOSING - BLINK_CLOSED) / BLINK_OPENING)

    def pose(self, t: float) -> tuple[float, float]:
        """Yaw and pitch (radians) at ``t``."""
        yaw = math.radians(YAW_DEGREES) * math.sin(2 * math.pi * t / YAW_PERIOD)
        pitch = math.radians(PITCH_DEGREES) * math.sin(2 * math.pi * t / PITCH_PERIOD + 1.0)
        return yaw, pitch

    def turned(self, t: float) -> np.ndarray:
        """The face at ``t``: its eyes as far closed as the blink is, turned by the pose (no sensor noise)."""
        picture = _close_eyes(self.face, self.closure(t))
        yaw, pitch = self.pose(t)
        map_x = self.grid_x - self.depth * math.sin(yaw)
        map_y = self.grid_y - self.depth * math.sin(pitch)
        return cv2.remap(picture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def frame(self, t: float) -> np.ndarray:
        return _noisy(self.turned(t), self.rng)


def _depth_map(face: FramedFace, grid_x: Floats, grid_y: Floats) -> Floats:
    """Each pixel's height above the background (px): an ellipsoid over the face, a bump at the nose."""
    top, right, bottom, left = face.box
    width = right - left
    cx, cy = (left + right) / 2, (top + bottom) / 2
    rx, ry = width * 0.62, (bottom - top) * 0.75
    inside = 1.0 - ((grid_x - cx) / rx) ** 2 - ((grid_y - cy) / ry) ** 2
    depth = 0.45 * width * np.sqrt(np.clip(inside, 0.0, None))
    nx, ny = face.landmarks["nose_tip"].mean(axis=0)
    sigma = 0.11 * width
    depth += 0.22 * width * np.exp(-((grid_x - nx) ** 2 + (grid_y - ny) ** 2) / (2 * sigma**2))
    return depth.astype(np.float32)


def _close_eyes(face: FramedFace, closure: float) -> Image:
    """The picture with both upper eyelids slid ``closure`` of the way down to the lower lids."""
    if closure <= 0.02:
        return face.picture
    picture = face.picture.copy()
    for eye in ("left_eye", "right_eye"):
        _close_eye(picture, face.picture, face.landmarks[eye], closure)
    return picture


def _close_eye(out: Image, source: Image, eye: np.ndarray, closure: float) -> None:
    """Slide one upper lid down: the rows between the lid and its new edge show the skin above the eye,
    stretched (dlib's order: outer corner, two upper-lid points, inner corner, two lower-lid points)."""
    xs = eye[:, 0]
    x0, x1 = math.floor(xs.min()) - 2, math.ceil(xs.max()) + 3
    eye_w = float(xs.max() - xs.min())
    upper = eye[[0, 1, 2, 3]] if eye[0, 0] < eye[3, 0] else eye[[3, 2, 1, 0]]
    lower = eye[[0, 5, 4, 3]] if eye[0, 0] < eye[3, 0] else eye[[3, 4, 5, 0]]
    columns = np.arange(x0, x1, dtype=np.float32)
    y_up = np.interp(columns, upper[:, 0], upper[:, 1]) - 1.5  # a little above: the lashes go too
    y_low = np.interp(columns, lower[:, 0], lower[:, 1]) + 1.0
    y_new = y_up + closure * (y_low - y_up)
    y_skin = y_up - 0.22 * eye_w  # the skin between the lid and the brow is what is stretched down
    y0, y1 = math.floor(y_skin.min()), math.ceil(y_low.max()) + 1
    if x0 < 0 or y0 < 0 or x1 > out.shape[1] or y1 > out.shape[0]:
        return
    rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    stretch = (y_up - y_skin) / np.maximum(y_new - y_skin, 1e-3)
    src_y = np.where((rows >= y_skin) & (rows <= y_new), y_skin + (rows - y_skin) * stretch, rows)
    src_x = np.broadcast_to(columns[None, :], src_y.shape)
    patch = cv2.remap(source, src_x.astype(np.float32), src_y.astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    edge = np.abs(rows - y_new) < 1.2  # the lid's edge: a darker line of lashes
    lashes = (edge & (columns[None, :] > xs.min()) & (columns[None, :] < xs.max()))[:, :, None]
    out[y0:y1, x0:x1] = np.where(lashes, (patch * (1 - 0.35 * closure)).astype(np.uint8), patch)


class ScreenLiveFace(LiveFace):
    """The live face as a phone screen replaying a video of it shows it to the camera (see :class:`Screen`)."""

    def __init__(self, face: FramedFace, screen: Screen | None = None) -> None:
        super().__init__(face)
        self.showing = f"face live {face.name} (screen)"
        self.screen = screen or Screen(face)

    def frame(self, t: float) -> np.ndarray:
        return _noisy(self.screen.film(self.turned(t)), self.rng)


class Screen:
    """A phone screen held up to the camera, showing a picture, as the camera sees it.

    A model, not an optical simulation: the screen is a portrait rectangle around the face, tilted by
    :data:`SCREEN_DEGREES`; each of its pixels is three vertical sub-pixel stripes (red, green, blue) with a
    dark row gap (the black matrix), :data:`SCREEN_PITCH` camera pixels wide. The camera's sensor
    integrates that grid over its own pixels (computed once by supersampling): a pitch near the camera's
    sampling and the tilt turn the grid into moire (beats and aliased stripes) over the whole screen; the
    lens blurs it a little (:data:`SCREEN_BLUR`). Around it a dark bezel, outside a dim room; on it a soft
    glare (a reflection of a light) and the screen's own black level and brightness. The bench
    (``bench/face_screen.py``) varies pitch, tilt and blur to see where the cue fades.
    """

    def __init__(self, face: FramedFace, pitch: float = SCREEN_PITCH, degrees: float = SCREEN_DEGREES,
                 blur: float = SCREEN_BLUR) -> None:
        top, right, bottom, left = face.box
        width = right - left
        cx, cy = (left + right) / 2, (top + bottom) / 2
        rotation = cv2.getRotationMatrix2D((cx, cy), degrees, 1.0)
        half_w, half_h = min(1.15 * width, WIDTH / 2 - 30), min(1.6 * width, HEIGHT / 2 - 10)
        inside = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.rectangle(inside, (round(cx - half_w), round(cy - half_h)), (round(cx + half_w), round(cy + half_h)),
                      255, -1)
        bezel = cv2.dilate(inside, np.ones((2 * SCREEN_BEZEL + 1, 2 * SCREEN_BEZEL + 1), np.uint8))
        on = cv2.warpAffine(inside, rotation, (WIDTH, HEIGHT)).astype(np.float32)[:, :, None] / 255
        frame = cv2.warpAffine(bezel, rotation, (WIDTH, HEIGHT)).astype(np.float32)[:, :, None] / 255
        gy, gx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        glare = np.exp(-(((gx - cx - 0.5 * half_w) / (0.5 * half_w)) ** 2
                         + ((gy - cy + 0.6 * half_h) / (0.35 * half_h)) ** 2))[:, :, None]
        # What the camera sees is base + picture * gain: the screen's black level and glare, the bezel and
        # the room (base), the lit share of the sub-pixel grid times the screen's brightness (gain).
        base = (on * (SCREEN_BLACK + SCREEN_GLARE * glare) + (frame - on) * SCREEN_BEZEL_GREY
                + (1 - frame) * SCREEN_ROOM_GREY)
        self.base = np.repeat(base, 3, axis=2).astype(np.float32)
        self.gain = (on * _subpixel_grid(pitch, degrees) * SCREEN_GAIN).astype(np.float32)
        self.blur = blur

    def film(self, picture: Image) -> Image:
        """The camera's view of the screen showing ``picture`` (640x480 BGR; the video on the screen: its
        own tilt is left out, the grid's is what makes the moire)."""
        seen = cv2.add(cv2.multiply(picture.astype(np.float32), self.gain), self.base)
        if self.blur > 0:  # the lens: a screen a few cm from it is never quite in focus
            seen = cv2.GaussianBlur(seen, (0, 0), self.blur)
        filmed: Image = np.clip(seen, 0, 255).astype(np.uint8)
        return filmed


def _subpixel_grid(pitch: float, degrees: float, supersample: int = 4) -> Floats:
    """Each camera pixel's share of lit red, green and blue sub-pixels (BGR, mean about 1/3 a channel): the
    screen's stripe grid, tilted by ``degrees``, integrated over each camera pixel by supersampling."""
    offsets = (np.arange(supersample, dtype=np.float32) + 0.5) / supersample
    ys = (np.arange(HEIGHT, dtype=np.float32)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(WIDTH, dtype=np.float32)[:, None] + offsets[None, :]).reshape(-1)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    angle = math.radians(degrees)
    u = (gx * math.cos(angle) + gy * math.sin(angle)) / pitch
    v = (-gx * math.sin(angle) + gy * math.cos(angle)) / pitch
    stripe = np.floor((u - np.floor(u)) * 3).astype(np.int8)  # 0 red, 1 green, 2 blue
    lit = (v - np.floor(v)) < 0.8  # the row's dark gap: the black matrix
    grid = np.empty((HEIGHT, WIDTH, 3), np.float32)
    for channel, index in ((2, 0), (1, 1), (0, 2)):
        fine = ((stripe == index) & lit).astype(np.float32)
        grid[:, :, channel] = fine.reshape(HEIGHT, supersample, WIDTH, supersample).mean(axis=(1, 3))
    return grid


class PhotoFace(Scene):
    """The same still picture moved rigidly in the image plane (see the module docstring)."""

    moving = True

    def __init__(self, face: FramedFace, screen: bool) -> None:
        picture = _screen_grid(face.picture) if screen else face.picture
        super().__init__(picture, f"face photo {face.name}" + (" (screen)" if screen else ""))
        self.face = face
        self.rng = np.random.default_rng()

    def matrix(self, t: float) -> np.ndarray:
        """The rigid move at ``t``: a rotation and scale about the face, then a translation."""
        angle = 6.0 * math.sin(2 * math.pi * t / 3.7)
        scale = 1.0 + 0.04 * math.sin(2 * math.pi * t / 5.3)
        top, right, bottom, left = self.face.box
        matrix = cv2.getRotationMatrix2D(((left + right) / 2, (top + bottom) / 2), angle, scale)
        matrix[0, 2] += 22 * math.sin(2 * math.pi * t / 2.9)
        matrix[1, 2] += 10 * math.sin(2 * math.pi * t / 4.1 + 0.7)
        return matrix

    def frame(self, t: float) -> np.ndarray:
        moved = cv2.warpAffine(self.picture, self.matrix(t), (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                               borderValue=(128, 128, 128))
        return _noisy(moved, self.rng)


def _screen_grid(picture: Image, pitch: int = 3) -> Image:
    """The picture as a phone screen shows it: each pixel an R, G and B stripe with dark gaps between rows."""
    grid = np.full(picture.shape, 0.75, np.float32)
    for channel, offset in ((2, 0), (1, 1), (0, 2)):  # BGR: red, green, blue stripes left to right
        grid[:, offset::pitch, channel] = 1.0
    grid[pitch - 1::pitch, :, :] *= 0.8
    screen: Image = np.clip(picture.astype(np.float32) * grid * 1.2, 0, 255).astype(np.uint8)
    return screen

