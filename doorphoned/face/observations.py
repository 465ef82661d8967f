"""What the recognition worker saw of one face, frame after frame: the seam between the worker and liveness.

The worker tracks the face it is about to match across a short run of frames and hands the run to
``doorphoned.face.liveness.assess(frames) -> LivenessVerdict`` when ``[face] liveness = "on"``. These
types live here, apart from both sides, so that the worker and the liveness check can be written (and
tested) independently: neither imports the other's internals.

No field holds a template or an encoding: an observation is pixels and landmark points of a face that
has not been identified, kept only in the worker's memory for the length of one decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

#: One landmark point (x, y) in the frame's pixel coordinates (the full-size frame, not the downscaled one).
Point = tuple[int, int]

#: face_recognition.face_landmarks' dict for one face: "chin", "left_eye", "right_eye", "nose_tip", ...
Landmarks = Mapping[str, Sequence[Point]]


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A face's box in full-size frame pixels, in face_recognition's order (top, right, bottom, left)."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True, slots=True)
class FaceFrame:
    """One frame's view of the tracked face.

    ``crop`` is a small greyscale (uint8, 2-D) image of the face box;
    ``at_ms`` is the frame's monotonic time in milliseconds (the camera's capture clock), so a check can
    reason about blink duration or motion speed independently of how many frames were dropped;
    ``screen`` is :func:`doorphoned.face.screen.screen_score` of the face box at full resolution (the 64 px
    crop is too small for a screen's grid), ``None`` when it was not measured or gave no verdict.
    """

    landmarks: Landmarks
    box: FaceBox
    crop: npt.NDArray[np.uint8]
    at_ms: int
    screen: float | None = None


@dataclass(frozen=True, slots=True)
class LivenessVerdict:
    """The liveness check's answer: ``live`` decides; ``reasons`` (short snake_case words) and ``score``
    (0..1, higher = more likely live) explain it in the door log and ``access check``."""

    live: bool
    reasons: tuple[str, ...]
    score: float


class LivenessCheck(Protocol):
    """The signature the worker calls: ``doorphoned.face.liveness.assess``."""

    def __call__(self, frames: Sequence[FaceFrame], /) -> LivenessVerdict: ...
