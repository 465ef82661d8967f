"""Is the face in front of the camera a person, or a picture of one held up to it?

Pure (no I/O, no face_recognition import): the recognition worker calls :func:`assess` with the frames in
which it saw one tracked face (landmarks, box, a grey crop, the frame's monotonic time) and gets a
:class:`~doorphoned.face.observations.LivenessVerdict`. Two cues, each enough by default:

- **blink**: the eye aspect ratio (EAR: the eyelids' opening over the eye's width, from the six eye
  landmarks) drops well below the level it has before *and* after, in both eyes at once. A still picture's
  eyes never close; its EAR only jitters by a few percent.
- **parallax** (non-rigid motion): every move of a flat picture, held up and moved, rotated, brought closer
  or tilted towards the camera, maps its landmarks by one *homography* (a rigid, similar or perspective
  transform of a plane). A head that turns a little does not: the nose tip stands out of the face and moves
  more than the face's outline. So we fit a homography from each frame's "flat" points (jaw line,
  eyebrows, eye and mouth corners) to a reference frame's, and measure where the nose lands off it, in
  inter-eye distances; its spread over the frames is the parallax. A photo's stays at the landmark
  detector's jitter (0.01-0.04 measured); a head turning by a few degrees gives 0.06-0.12.

A third cue vetoes: **screen**. A phone or tablet replaying a video of the person blinks and turns, but its
pixel grid shows in the camera's frames as moire: the worker measures each frame's face region
(:mod:`doorphoned.face.screen`); when the median over the window reaches ``screen_threshold`` the face is
not live, reason ``screen``, whatever the other cues saw.

What it does not stop (a 3-D mask, a screen too far away or too fine for its grid to show) is in
docs/face.md (Liveness).
Thresholds are parameters (:class:`LivenessParams`, the ``[face]`` config carries them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from doorphoned.face.observations import FaceFrame, LivenessVerdict

#: face_recognition.face_landmarks' regions and their point counts (dlib's 68-point model, in this order).
REGIONS: tuple[tuple[str, int], ...] = (
    ("chin", 17), ("left_eyebrow", 5), ("right_eyebrow", 5), ("nose_bridge", 4), ("nose_tip", 5),
    ("left_eye", 6), ("right_eye", 6), ("top_lip", 12), ("bottom_lip", 12))
POINTS = sum(count for _, count in REGIONS)  # 72: the lips repeat the mouth corners
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
NOSE = list(range(27, 36))  # bridge and tip: the points furthest out of the face's plane
#: The points the homography is fitted to: jaw line, eyebrows, eye corners, mouth corners (not the lids,
#: which move in a blink, nor the nose, whose offset is what is measured).
FLAT = [*range(0, 27), 36, 39, 42, 45, 48, 54]

Require = Literal["any", "blink", "motion", "both"]
Points = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LivenessParams:
    """The check's thresholds (``[face]``'s ``liveness_*`` keys)."""

    min_frames: int = 6  # fewer usable frames than this: not live, reason ``too_few_frames``
    min_span_ms: int = 1000  # ... or frames spanning less time than this (a blink or a turn needs time)
    window_ms: int = 6000  # only frames this close to the newest one count
    smooth_ms: int = 400  # each nose offset is averaged with those of frames this close in time
    blink_dip: float = 0.4  # a blink: the EAR falls by this fraction below its level before and after
    parallax: float = 0.048  # nose offset spread (inter-eye distances) that counts as a head turning
    moved: float = 0.1  # the face moved this far (inter-eye distances): ``rigid_motion`` (else ``no_motion``)
    require: Require = "any"  # which cue(s) must be seen: either, one of them, or both
    screen: bool = True  # the screen cue vetoes (off: the frames' screen scores are ignored)
    screen_threshold: float = 15.0  # median screen score over the window that says "a screen" (docs/face.md)
    screen_frames: int = 3  # fewer frames with a screen score than this: the screen cue gives no verdict

    def __post_init__(self) -> None:
        if self.require not in ("any", "blink", "motion", "both"):
            raise ValueError("require must be any, blink, motion or both")
        if not (self.min_frames >= 2 and self.min_span_ms >= 0 and self.window_ms > 0):
            raise ValueError("min_frames must be >= 2, min_span_ms >= 0, window_ms > 0")
        if not (0 < self.blink_dip < 1 and self.parallax > 0 and self.moved > 0):
            raise ValueError("blink_dip must be 0-1, parallax and moved > 0")
        if not (math.isfinite(self.screen_threshold) and self.screen_threshold > 1 and self.screen_frames >= 1):
            raise ValueError("screen_threshold must be > 1 and screen_frames >= 1")


DEFAULTS = LivenessParams()


@dataclass(frozen=True, slots=True)
class _Track:
    """The usable frames of a window: landmark points (frames x 72 x 2) and times."""

    points: Points
    at_ms: npt.NDArray[np.float64]
    screen: npt.NDArray[np.float64]  # each frame's screen score, NaN where it has none


def assess(frames: Sequence[FaceFrame], /, params: LivenessParams = DEFAULTS) -> LivenessVerdict:
    """The verdict over the newest ``params.window_ms`` of ``frames`` (one tracked face, any order).

    Never raises on odd input: frames whose landmarks are missing, malformed or not finite are left out
    (reason ``bad_landmarks`` when that leaves too few).
    """
    track, dropped = _usable(frames, params.window_ms)
    if track is None or len(track.at_ms) < params.min_frames or _span(track) < params.min_span_ms:
        reasons = ("too_few_frames", "bad_landmarks") if dropped else ("too_few_frames",)
        return LivenessVerdict(False, reasons, 0.0)
    blink = blink_strength(track.points) / params.blink_dip
    parallax, moved = motion(track.points, track.at_ms, params.smooth_ms)
    turn = parallax / params.parallax
    verdict = _verdict(blink, turn, moved >= params.moved, params.require)
    if params.screen and on_screen(track.screen, params):
        missing = tuple(r for r in verdict.reasons if r not in ("blink", "parallax"))
        return LivenessVerdict(False, (*missing, "screen"), min(verdict.score, 0.499))
    return verdict


def on_screen(scores: npt.NDArray[np.float64], params: LivenessParams = DEFAULTS) -> bool:
    """Whether the frames' screen scores (oldest first; NaN: none) say "a screen": the median over the window
    reaches the threshold, or the median of some ``screen_frames`` consecutive scored frames does.

    Medians, not the largest: one frame's glint or JPEG artefact does not refuse a person, a screen's grid is
    in most frames. The consecutive run keeps the veto from being diluted when a window mixes presentations
    (a print held up, then a phone replaying a video swapped in front of the lens: the print's low scores
    would otherwise pull the whole window's median under the threshold)."""
    scored = scores[np.isfinite(scores)]
    count = params.screen_frames
    if len(scored) < count:
        return False
    if float(np.median(scored)) >= params.screen_threshold:
        return True
    runs = np.lib.stride_tricks.sliding_window_view(scored, count)
    return bool((np.median(runs, axis=1) >= params.screen_threshold).any())


def _verdict(blink: float, turn: float, moved: bool, require: Require) -> LivenessVerdict:
    """Live when the required cue(s) reached their threshold (strength >= 1); the reasons name the cues
    seen, or the ones missing (a missing turn is ``rigid_motion`` when the face moved, else ``no_motion``)."""
    seen = {"blink": blink >= 1.0, "parallax": turn >= 1.0}
    needed = {"any": ("blink", "parallax"), "blink": ("blink",), "motion": ("parallax",),
              "both": ("blink", "parallax")}[require]
    live = any(seen[c] for c in needed) if require == "any" else all(seen[c] for c in needed)
    if live:
        reasons = tuple(c for c in needed if seen[c])
    else:
        missing = {"blink": "no_blink", "parallax": "rigid_motion" if moved else "no_motion"}
        reasons = tuple(missing[c] for c in needed if not seen[c])
    strengths = {"blink": blink, "parallax": turn}
    strength = (max if require == "any" else min)(strengths[c] for c in needed)
    score = strength / (1.0 + strength)  # 0.5 exactly at the threshold
    return LivenessVerdict(live, reasons, round(score if live else min(score, 0.499), 3))


def _span(track: _Track) -> float:
    return float(track.at_ms[-1] - track.at_ms[0])


def _usable(frames: Sequence[FaceFrame], window_ms: int) -> tuple[_Track | None, bool]:
    """The frames with well-formed landmarks and times, oldest first, within the window; and whether any
    frame was left out for being malformed."""
    good: list[tuple[float, Points, float]] = []
    for frame in frames:
        at_ms, points = _time(frame), _points(frame)
        if at_ms is not None and points is not None:
            good.append((at_ms, points, _screen(frame)))
    dropped = len(good) < len(frames)
    if not good:
        return None, dropped
    good.sort(key=lambda item: item[0])
    newest = good[-1][0]
    kept = [item for item in good if item[0] >= newest - window_ms]
    return _Track(np.stack([p for _, p, _ in kept]), np.array([t for t, _, _ in kept]),
                  np.array([s for _, _, s in kept])), dropped


def _time(frame: object) -> float | None:
    at_ms = getattr(frame, "at_ms", None)
    if isinstance(at_ms, bool) or not isinstance(at_ms, int | float) or not math.isfinite(at_ms):
        return None
    return float(at_ms)


def _screen(frame: object) -> float:
    """The frame's screen score, NaN when it has none (or a malformed one)."""
    score = getattr(frame, "screen", None)
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return math.nan
    return float(score)


def _points(frame: object) -> Points | None:
    """The frame's 72 landmark points in :data:`REGIONS` order, or ``None`` when they are not usable."""
    landmarks = getattr(frame, "landmarks", None)
    if not isinstance(landmarks, Mapping):
        return None
    parts: list[Points] = []
    for name, count in REGIONS:
        try:
            raw = np.asarray(landmarks.get(name))
        except (ValueError, TypeError, OverflowError, RecursionError):
            return None
        if raw.shape != (count, 2) or raw.dtype.kind not in "iuf":
            return None
        part = raw.astype(np.float64)
        if not np.isfinite(part).all() or np.abs(part).max() > 1e6:
            return None
        parts.append(part)
    return np.concatenate(parts)


def eye_aspect_ratio(eye: Points) -> float:
    """The eyelids' opening over the eye's width (Soukupova & Cech): ~0.2-0.3 open, < 0.15 shut."""
    width = float(np.linalg.norm(eye[0] - eye[3]))
    if width < 1e-6:
        return 0.0
    return float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / (2.0 * width)


def blink_strength(points: Points) -> float:
    """How deep the deepest closing of the eyes is: the EAR's fall below the lower of its highest levels
    before and after it, over the window's highest EAR. 0 when the lowest EAR is the first or last frame,
    and small when the eyes close and stay closed: a closing that does not recover is not a blink."""
    ears = np.array([(eye_aspect_ratio(p[LEFT_EYE]) + eye_aspect_ratio(p[RIGHT_EYE])) / 2 for p in points])
    low, top = int(np.argmin(ears)), float(ears.max())
    if low == 0 or low == len(ears) - 1 or top <= 0:
        return 0.0
    around = min(float(ears[:low].max()), float(ears[low + 1:].max()))
    return max(0.0, around - float(ears[low])) / top


def inter_eye(points: Points) -> float:
    return float(np.linalg.norm(points[LEFT_EYE].mean(axis=0) - points[RIGHT_EYE].mean(axis=0)))


def motion(points: Points, at_ms: npt.NDArray[np.float64], smooth_ms: float = 400.0) -> tuple[float, float]:
    """(parallax, moved): the spread of the nose's offset from where a homography of the flat points puts
    it, and the furthest the flat points moved from the reference, both in the reference's inter-eye
    distances.

    The reference is the middle frame (a sway either side of it counts in full). Each offset is averaged
    with those of the frames within ``smooth_ms`` (its neighbours at 4 frames a second) before the spread
    (10th to 90th percentile) is taken: the landmark detector's jitter is new in each frame, a head's turn
    is smooth over a few hundred ms, but not over seconds (at 1-2 frames a second an average over
    neighbours would flatten the turn itself, so sparse frames are not averaged). Frames whose homography
    cannot be fitted (degenerate points) are left out.
    """
    ref = points[len(points) // 2]
    scale = inter_eye(ref)
    if not math.isfinite(scale) or scale < 1.0:
        return 0.0, 0.0
    moved = float(np.linalg.norm(points[:, FLAT] - ref[FLAT], axis=2).mean(axis=1).max()) / scale
    offsets, times = [], []
    for frame, at in zip(points, at_ms, strict=True):
        homography, _ = cv2.findHomography(frame[FLAT], ref[FLAT], 0)
        if homography is None or not np.isfinite(homography).all():
            continue
        nose = cv2.perspectiveTransform(frame[NOSE][None], homography)[0]
        offsets.append((nose - ref[NOSE]).mean(axis=0))
        times.append(at)
    if len(offsets) < 3:
        return 0.0, moved
    series, t = np.array(offsets), np.array(times)
    near = (np.abs(t[:, None] - t[None, :]) <= smooth_ms).astype(np.float64)
    averaged = near.sum(axis=1, keepdims=True)
    smooth = (near @ series) / averaged
    low, high = np.percentile(smooth, [10, 90], axis=0)
    # Fewer offsets averaged, more jitter left: the spread is discounted as the threshold would grow,
    # by (3 / offsets averaged) ** (1/3) (1 at 4 frames a second, 1.44 with no neighbour in reach).
    discount = (3.0 / float(averaged.mean())) ** (1 / 3)
    return float(np.linalg.norm(high - low)) / scale / max(discount, 1.0), moved
