"""Synthetic camera scenes for the motion tests and bench: real pixels, deterministic, any length.

A porch-like picture (a wall gradient, a door, a doormat, fine texture) at 640x480 BGR with per-frame
sensor noise, and the things that happen in front of a door camera: a visitor (a dark upright block)
entering and crossing, the light ramping over seconds, lights switched on at once, heavy noise at night,
movement where no zone looks. Each scene is a list of uint8 BGR numpy frames; the
tests wrap them in :class:`~doorphoned.core.frames.Frame` with their own clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from doorphoned.core.frames import Frame

WIDTH, HEIGHT, FPS = 640, 480, 15


@lru_cache(maxsize=4)
def porch(width: int = WIDTH, height: int = HEIGHT, seed: int = 7) -> np.ndarray:
    """The empty scene, float32 grey levels (0..255) per BGR channel, before noise and lighting (read-only)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 50 * (y / height) + 20 * (x / width)  # light from above and the left
    texture = rng.normal(0, 6, (height // 8 + 1, width // 8 + 1)).astype(np.float32)
    base += np.kron(texture, np.ones((8, 8), np.float32))[:height, :width]  # bricks, coarse grain
    base[int(0.15 * height):int(0.85 * height), int(0.4 * width):int(0.6 * width)] = 60  # the door
    base[int(0.88 * height):, int(0.35 * width):int(0.65 * width)] = 150  # the doormat
    tint = np.array([1.0, 0.95, 0.9], np.float32)
    scene = np.clip(base[:, :, None] * tint, 0, 255).astype(np.float32)
    scene.flags.writeable = False
    return scene


def render(scene: np.ndarray, gain: float = 1.0, offset: float = 0.0, noise: float = 2.0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """One camera frame of ``scene``: lighting (gain, offset), sensor noise (sigma), clipped to uint8."""
    rng = rng or np.random.default_rng(0)
    picture = scene * gain + offset
    if noise:
        picture = picture + rng.normal(0, noise, scene.shape[:2]).astype(np.float32)[:, :, None]
    return np.clip(picture, 0, 255).astype(np.uint8)


def with_object(scene: np.ndarray, x: float, y: float, w: float = 0.12, h: float = 0.3,
                level: float = 25.0) -> np.ndarray:
    """``scene`` with a dark block (a person in a coat) whose top-left corner is at (x, y), in 0..1."""
    height, width = scene.shape[:2]
    out = scene.copy()
    x0, y0 = int(x * width), int(y * height)
    x1, y1 = int((x + w) * width), int((y + h) * height)
    out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = level
    return out


def still(seconds: float, noise: float = 2.0, seed: int = 1) -> list[np.ndarray]:
    scene, rng = porch(), np.random.default_rng(seed)
    return [render(scene, noise=noise, rng=rng) for _ in range(int(seconds * FPS))]


def crossing(seconds: float = 4.0, y: float = 0.45, lead_in: float = 1.0, seed: int = 2,
             w: float = 0.12, h: float = 0.3) -> list[np.ndarray]:
    """``lead_in`` seconds of empty porch, then a visitor entering at the left and leaving at the right."""
    scene, rng = porch(), np.random.default_rng(seed)
    frames = [render(scene, rng=rng) for _ in range(int(lead_in * FPS))]
    steps = int(seconds * FPS)
    for i in range(steps):
        x = -w + (1 + w) * i / max(steps - 1, 1)
        frames.append(render(with_object(scene, x, y, w, h), rng=rng))
    return frames


def ramp(seconds: float = 10.0, start: float = 0.4, end: float = 1.4, seed: int = 3) -> list[np.ndarray]:
    """Dawn or dusk compressed into ``seconds``: the gain of the whole picture goes from start to end."""
    scene, rng = porch(), np.random.default_rng(seed)
    steps = int(seconds * FPS)
    return [render(scene, gain=start + (end - start) * i / max(steps - 1, 1), rng=rng) for i in range(steps)]


def step(before: float = 0.5, after: float = 1.3, offset: float = 30.0, seconds: float = 4.0,
         seed: int = 4) -> list[np.ndarray]:
    """The porch light switched on: gain and offset jump between two frames, then stay."""
    scene, rng = porch(), np.random.default_rng(seed)
    half = int(seconds * FPS / 2)
    return ([render(scene, gain=before, rng=rng) for _ in range(half)]
            + [render(scene, gain=after, offset=offset, rng=rng) for _ in range(half)])


def noisy(seconds: float = 6.0, sigma: float = 14.0, seed: int = 5) -> list[np.ndarray]:
    """A dark night: low gain and heavy per-pixel sensor noise."""
    scene, rng = porch(), np.random.default_rng(seed)
    return [render(scene, gain=0.5, noise=sigma, rng=rng) for _ in range(int(seconds * FPS))]


def frames(images: list[np.ndarray], first_seq: int = 1, start: float = 1000.0) -> Iterator[Frame]:
    """The images as camera frames at ``FPS`` (``monotonic`` on a synthetic clock from ``start``)."""
    for i, image in enumerate(images):
        image.flags.writeable = False
        yield Frame(first_seq + i, start + i / FPS, image)
