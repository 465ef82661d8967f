"""Untrusted photo bytes (a CLI file, the cloud's base64) into an RGB array, refusing what must not be decoded.

The limits apply *before* decoding: the byte size first, then the header's width and height (PIL reads the
header lazily in ``Image.open``), so a 20,000 x 20,000 PNG of a few hundred kilobytes is refused without
allocating its 1.2 GB of pixels. PIL's own decompression-bomb guard stays on underneath as a second line.
Only JPEG and PNG are accepted (what phones send); a truncated or corrupt file is refused with the decoder's
complaint shortened, never a traceback.

The quality checks run on the face found (:func:`quality`): the eyes far enough apart in pixels (a face big
enough to give a stable template), the variance of the Laplacian of the face crop (sharp enough) and its mean
brightness (light enough). Each failure is a :class:`PhotoError` with a machine-readable ``reason``.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_BYTES = 10 * 1024 * 1024
MAX_SIDE = 8000  # pixels, either side, read from the header
MAX_PIXELS = 40_000_000
WORK_SIDE = 1600  # larger photos are scaled down before detection: a phone's 12 MP adds time, not accuracy
FORMATS = ("JPEG", "PNG")


class PhotoError(ValueError):
    """A photo refused; ``reason`` is the word (``too_large``, ``no_face``, ``blurred``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class QualityLimits:
    min_eye_distance: float = 40.0  # pixels between the eye centres
    min_sharpness: float = 20.0  # variance of the Laplacian of the face crop (grey levels^2)
    min_brightness: float = 40.0  # mean grey level of the face crop, 0..255


@dataclass(frozen=True)
class Quality:
    eye_distance: float
    sharpness: float
    brightness: float

    def to_dict(self) -> dict[str, float]:
        return {"eye_distance": round(self.eye_distance, 1), "sharpness": round(self.sharpness, 1),
                "brightness": round(self.brightness, 1)}


def decode_photo(data: bytes) -> npt.NDArray[np.uint8]:
    """JPEG/PNG bytes -> HxWx3 uint8 RGB (EXIF rotation applied, scaled to at most ``WORK_SIDE``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise PhotoError("empty", "the photo is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise PhotoError("too_large", f"the photo is {len(data)} bytes; at most {MAX_BYTES} are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))  # reads the header only
            _check_header(opened.format, opened.size)
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except PhotoError:
        raise
    except UnidentifiedImageError as exc:
        raise PhotoError("format", "the file is not a JPEG or PNG image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError("too_large", "the photo has too many pixels") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on bad files
        raise PhotoError("corrupt", f"the photo cannot be decoded ({type(exc).__name__})") from exc
    image = image.convert("RGB")
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE))
    return np.asarray(image, dtype=np.uint8)


def _check_header(kind: str | None, size: tuple[int, int]) -> None:
    if kind not in FORMATS:
        raise PhotoError("format", f"the photo must be JPEG or PNG (this is {kind or 'not an image'})")
    width, height = size
    if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise PhotoError("too_large", f"the photo is {width} x {height} pixels; at most {MAX_SIDE} a side"
                                      f" and {MAX_PIXELS // 1_000_000} MP are accepted")


Box = tuple[int, int, int, int]  # top, right, bottom, left (face_recognition's order)


def one_face(boxes: Sequence[Box]) -> Box:
    """The one face an enrolment photo must show."""
    if not boxes:
        raise PhotoError("no_face", "no face found in the photo")
    if len(boxes) > 1:
        raise PhotoError("several_faces", f"{len(boxes)} faces in the photo; an enrolment photo shows one person")
    return boxes[0]


def _centre(points: Sequence[tuple[int, int]]) -> tuple[float, float]:
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def measure(rgb: npt.NDArray[np.uint8], box: Box, landmarks: Mapping[str, Sequence[tuple[int, int]]]) -> Quality:
    import cv2

    left, right = landmarks.get("left_eye") or [], landmarks.get("right_eye") or []
    eyes = math.dist(_centre(left), _centre(right)) if left and right else 0.0
    top, rgt, bottom, lft = box
    h, w = rgb.shape[:2]
    crop = rgb[max(top, 0):min(bottom, h), max(lft, 0):min(rgt, w)]
    if crop.size == 0:
        return Quality(eyes, 0.0, 0.0)
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return Quality(eyes, sharpness, float(grey.mean()))


def quality(rgb: npt.NDArray[np.uint8], box: Box, landmarks: Mapping[str, Sequence[tuple[int, int]]],
            limits: QualityLimits) -> Quality:
    """The face's measures, or the first limit it fails (size, then sharpness, then light)."""
    found = measure(rgb, box, landmarks)
    if found.eye_distance < limits.min_eye_distance:
        raise PhotoError("face_too_small", f"the face is too small: {found.eye_distance:.0f} px between the eyes,"
                                           f" at least {limits.min_eye_distance:.0f} needed")
    if found.sharpness < limits.min_sharpness:
        raise PhotoError("blurred", f"the face is too blurred (sharpness {found.sharpness:.0f},"
                                    f" at least {limits.min_sharpness:.0f} needed)")
    if found.brightness < limits.min_brightness:
        raise PhotoError("too_dark", f"the face is too dark (brightness {found.brightness:.0f},"
                                     f" at least {limits.min_brightness:.0f} needed)")
    return found
