"""Is the face on a screen? A regular pixel grid in the face's texture, from one camera frame.

Pure (numpy and OpenCV, no I/O): the recognition worker calls :func:`screen_score` on each frame's face
region at the camera's full resolution (the worker receives the camera's decoded frames, 640x480 from the
unit's camera), and the liveness check (:mod:`doorphoned.face.liveness`) takes the median over its window.

Why it works: a phone or tablet screen is a grid of pixels, each three sub-pixel stripes (red, green, blue)
with a dark gap between rows. The camera samples that grid with its own, slightly different and slightly
rotated grid; what it records is the screen's grid *aliased*: moire beats and stripes, a handful of sharp,
isolated peaks in the 2-D spectrum of the face region away from DC. Skin, hair and the sensor's noise have a
smooth spectrum that falls with frequency: no bin stands far above the others at its distance from DC.

The score: the face region's central square (at most :data:`SIDE` px, never resampled: resampling would
move and blur the peaks), its mean removed, a Hann window (the crop's edges would otherwise leak into every
bin), the magnitude of its 2-D FFT; each bin divided by the median of the bins at the same distance from DC
(the spectrum's fall with frequency, and the face's own shape, cancel out); the score is the largest such
ratio in the band :data:`BAND` (cycles per pixel) of one half-plane (the other is its mirror). A natural
face scores ~3-6 (the largest of ~2,000 noisy bins), a screen's grid far more (docs/face.md: measured).

Bins on the axes near multiples of 1/8 cycle per pixel are left out: JPEG's 8x8 blocks put energy there on
any picture the camera compressed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

SIDE = 128  # px: the central square analysed (a 200 px face at 640x480 gives ~160)
MIN_SIDE = 32  # px: a smaller face region gives no verdict (too few bins to tell a peak from noise)
BAND = (0.12, 0.5)  # cycles per pixel: above the face's own structure (eyes, mouth), up to Nyquist
MIN_CONTRAST = 2.0  # grey levels (standard deviation): a flatter region (blank, over-exposed) gives no verdict
MAX_LEVEL = 65535.0  # a larger grey level is not a camera's (and would overflow the spectrum)
MAX_PIXELS = 8000 * 8000  # a crop larger than this is refused (not a camera's face region)


def screen_score(crop: npt.NDArray[np.generic]) -> float | None:
    """How strongly a regular grid stands out in ``crop`` (the face region, full resolution, grey 2-D or
    BGR 3-D, any numeric dtype): the largest whitened spectral peak in :data:`BAND`. ``None`` when there
    is no verdict to give: a region too small, too flat, malformed or not finite."""
    grey = _grey_square(crop)
    if grey is None:
        return None
    shape = _Shape.of(grey.shape[0], grey.shape[1])
    spectrum = np.abs(np.fft.rfft2((grey - grey.mean()) * shape.window))
    ratio = _whitened(spectrum[shape.band], shape)
    return None if ratio is None else round(ratio, 3)


@dataclass(frozen=True)
class _Shape:
    """What depends only on the square's size (computed once per size): the window, the band's bins, each
    bin's ring (distance from DC in bins) and where the rings start once sorted."""

    window: npt.NDArray[np.float64]
    band: npt.NDArray[np.bool_]
    rings: npt.NDArray[np.int64]

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def of(rows: int, cols: int) -> _Shape:
        fy = np.asarray(np.fft.fftfreq(rows), np.float64)[:, None]
        fx = np.asarray(np.fft.rfftfreq(cols), np.float64)[None, :]
        radius = np.hypot(fy, fx)
        band = (radius >= BAND[0]) & (radius <= BAND[1]) & ~_block_lines(fy, fx, rows, cols)
        rings = np.minimum((radius * min(rows, cols)).astype(np.int64), rows + cols)[band]
        return _Shape(np.outer(np.hanning(rows), np.hanning(cols)), band, rings)


def _grey_square(crop: npt.NDArray[np.generic]) -> npt.NDArray[np.float64] | None:
    """The central square (at most SIDE px) as float grey levels, or None when there is nothing to judge."""
    if not isinstance(crop, np.ndarray) or crop.ndim not in (2, 3) or crop.size > MAX_PIXELS:
        return None
    if crop.dtype.kind not in "iuf" or min(crop.shape[:2]) < MIN_SIDE:
        return None
    if crop.ndim == 3:
        if crop.shape[2] != 3:
            return None
        crop = crop.astype(np.float64) @ np.array([0.114, 0.587, 0.299])  # BGR, as cv2's grey
    side = min(SIDE, *crop.shape[:2])
    top, left = (crop.shape[0] - side) // 2, (crop.shape[1] - side) // 2
    square = np.array(crop[top:top + side, left:left + side], dtype=np.float64)
    if not np.isfinite(square).all() or float(np.abs(square).max()) > MAX_LEVEL or float(square.std()) < MIN_CONTRAST:
        return None
    return square


def _whitened(values: npt.NDArray[np.float64], shape: _Shape) -> float | None:
    """The largest of the band's bins over the median of its ring (bins at the same distance from DC)."""
    if len(values) < 16:
        return None
    rings = shape.rings
    order = np.lexsort((values, rings))  # by ring, then by value: each ring's median is in its middle
    counts = np.bincount(rings)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    present = counts > 0
    medians = np.zeros(len(counts))
    medians[present] = values[order][starts[present] + (counts[present] - 1) // 2]
    floor = medians[rings]
    usable = floor > 0
    if not usable.any():
        return None
    best = float((values[usable] / floor[usable]).max())
    return best if math.isfinite(best) else None


def _block_lines(fy: npt.NDArray[np.float64], fx: npt.NDArray[np.float64], rows: int,
                 cols: int) -> npt.NDArray[np.bool_]:
    """The bins where JPEG's 8x8 blocks put energy on any picture: on the axes, near multiples of 1/8."""
    def near_eighth(f: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.bool_]:
        return np.abs(f * 8 - np.round(f * 8)) * n / 8 <= 1.5

    on_x_axis, on_y_axis = np.abs(fy) <= 1.5 / rows, fx <= 1.5 / cols
    return (on_x_axis & near_eighth(fx, cols)) | (on_y_axis & near_eighth(fy, rows))


def grey_face(frame_rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
    """The face box (top, right, bottom, left) of a full-resolution RGB frame, in grey (clipped to the frame)."""
    top, right, bottom, left = box
    h, w = frame_rgb.shape[:2]
    region = frame_rgb[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
    if not region.size:
        return np.zeros((0, 0), np.uint8)
    return np.asarray(cv2.cvtColor(region, cv2.COLOR_RGB2GRAY), np.uint8)
