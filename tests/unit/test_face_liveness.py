"""The liveness check on landmark sequences: a face model in 3-D that turns and blinks is live; the same face
as a flat picture moved, rotated, scaled or tilted is not; too few frames or malformed ones are not either.

The model is one real face's 68 landmarks (face_recognition on obama.jpg framed by hw-sim, 200 px wide,
relative to the eyes' midpoint) with a height above the face's plane for each point (px: the nose stands
out most, the jaw line least), and the landmark detector's jitter as Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.face import liveness
from doorphoned.face.liveness import LivenessParams, assess
from doorphoned.face.observations import FaceBox, FaceFrame
from tests.fuzz import fuzz_cases

SHAPE: dict[str, list[tuple[int, int]]] = {
    "chin": [(-99, 4), (-97, 30), (-94, 56), (-89, 84), (-80, 108), (-65, 132), (-47, 150), (-26, 164), (0, 168),
             (25, 160), (45, 144), (63, 124), (78, 102), (86, 78), (90, 52), (92, 26), (94, 2)],
    "left_eyebrow": [(-78, -4), (-67, -18), (-50, -24), (-32, -24), (-14, -20)],
    "right_eyebrow": [(14, -22), (31, -26), (49, -26), (66, -20), (76, -6)],
    "nose_bridge": [(0, -4), (-1, 12), (-1, 30), (-1, 48)],
    "nose_tip": [(-26, 56), (-14, 58), (-2, 62), (11, 58), (23, 54)],
    "left_eye": [(-57, 2), (-47, -6), (-36, -6), (-25, 2), (-36, 4), (-46, 4)],
    "right_eye": [(25, 2), (35, -8), (46, -6), (56, 0), (46, 4), (36, 4)],
    "top_lip": [(-49, 86), (-34, 78), (-15, 76), (-1, 78), (13, 76), (32, 76), (47, 82), (42, 84), (14, 82),
                (-1, 84), (-15, 82), (-45, 86)],
    "bottom_lip": [(47, 82), (32, 100), (14, 112), (-1, 114), (-16, 112), (-34, 104), (-49, 86), (-45, 86),
                   (-15, 100), (-1, 102), (14, 100), (42, 84)],
}
HEIGHT = {"chin": None, "left_eyebrow": 45, "right_eyebrow": 45, "nose_bridge": None, "nose_tip": None,
          "left_eye": 35, "right_eye": 35, "top_lip": 60, "bottom_lip": 55}
CENTRE = np.array([320.0, 200.0])
JITTER = 0.8  # px, the landmark detector's on hw-sim's JPEG frames at this size
FPS = 4.0  # the worker's default max_fps


def _heights(region: str, points: list[tuple[int, int]]) -> list[float]:
    fixed = HEIGHT[region]
    if fixed is not None:
        return [float(fixed)] * len(points)
    if region == "chin":  # 0 at the ears, 40 at the chin's point
        return [40.0 * math.cos(math.pi * (i - 8) / 16) ** 2 for i in range(len(points))]
    if region == "nose_bridge":
        return [55.0, 65.0, 78.0, 90.0]
    return [60.0, 80.0, 95.0, 80.0, 60.0]  # nose_tip


def face3d() -> dict[str, np.ndarray]:
    """Each region's points as (x, y, height) relative to the eyes' midpoint."""
    return {r: np.array([(x, y, z) for (x, y), z in zip(p, _heights(r, p), strict=True)], float)
            for r, p in SHAPE.items()}


def blink(points: dict[str, np.ndarray], closure: float) -> dict[str, np.ndarray]:
    """The upper lids (points 1, 2 of each eye) moved ``closure`` of the way to the lower lids (5, 4)."""
    out = {k: v.copy() for k, v in points.items()}
    for eye in ("left_eye", "right_eye"):
        e = out[eye]
        e[1, 1] += closure * (e[5, 1] - e[1, 1]) * 0.85
        e[2, 1] += closure * (e[4, 1] - e[2, 1]) * 0.85
    return out


def turned(points: dict[str, np.ndarray], yaw: float, pitch: float) -> dict[str, np.ndarray]:
    """The head rotated (radians) about a vertical then a horizontal axis through the face, seen from far."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    out = {}
    for region, p in points.items():
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        x2, z2 = x * cy + z * sy, -x * sy + z * cy
        y2 = y * cp + z2 * sp
        out[region] = np.stack([x2, y2, z2], axis=1)
    return out


def frame(points: dict[str, np.ndarray], t: float, rng: np.random.Generator,
          move: Callable[[np.ndarray], np.ndarray] = lambda p: p) -> FaceFrame:
    """A FaceFrame of the projected points (integers, as face_recognition gives them) at ``t`` seconds."""
    landmarks = {}
    for region, p in points.items():
        xy = move(p[:, :2] + CENTRE) + rng.normal(0, JITTER, (len(p), 2))
        landmarks[region] = [(round(x), round(y)) for x, y in xy]
    return FaceFrame(landmarks, FaceBox(100, 420, 380, 220), np.zeros((64, 64), np.uint8), round(t * 1000))


def live_sequence(n: int, seed: int, blinks: bool = True, yaw_deg: float = 7.0, start: float = 0.0,
                  fps: float = FPS) -> list[FaceFrame]:
    """A person standing still: the head turns +-``yaw_deg`` every 3.1 s, nods a little, blinks at 2.4 s."""
    rng, model = np.random.default_rng(seed), face3d()
    frames = []
    for i in range(n):
        t = start + i / fps
        yaw = math.radians(yaw_deg) * math.sin(2 * math.pi * t / 3.1)
        pitch = math.radians(yaw_deg / 2) * math.sin(2 * math.pi * t / 4.3 + 1)
        shut = 1.0 if blinks and 2.0 <= t % 2.4 < 2.3 else 0.0
        frames.append(frame(turned(blink(model, shut), yaw, pitch), t, rng))
    return frames


def flat_sequence(n: int, seed: int, move: Callable[[float], Callable[[np.ndarray], np.ndarray]],
                  fps: float = FPS) -> list[FaceFrame]:
    """A picture of the face (all heights 0 in effect: it never turns) moved by ``move(t)``."""
    rng, model = np.random.default_rng(seed), face3d()
    return [frame(model, i / fps, rng, move(i / fps)) for i in range(n)]


def similarity(angle_deg: float, scale: float, dx: float, dy: float) -> Callable[[np.ndarray], np.ndarray]:
    a = math.radians(angle_deg)
    m = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return lambda p: (p - CENTRE) @ m.T + CENTRE + (dx, dy)


def homography(tilt_x: float, tilt_y: float) -> Callable[[np.ndarray], np.ndarray]:
    """A flat picture tilted towards the camera: a perspective map of the plane."""
    h = np.array([[1.0, 0, 0], [0, 1.0, 0], [tilt_x, tilt_y, 1.0]])

    def apply(p: np.ndarray) -> np.ndarray:
        q = np.c_[p - CENTRE, np.ones(len(p))] @ h.T
        return q[:, :2] / q[:, 2:] + CENTRE
    return apply


def rigid_moves(t: float) -> Callable[[np.ndarray], np.ndarray]:
    """hw-sim's photo scene: rotation +-6 degrees, scale +-4 %, translation +-22 / +-10 px."""
    return similarity(6 * math.sin(2 * math.pi * t / 3.7), 1 + 0.04 * math.sin(2 * math.pi * t / 5.3),
                      22 * math.sin(2 * math.pi * t / 2.9), 10 * math.sin(2 * math.pi * t / 4.1 + 0.7))


# ---- live

@pytest.mark.parametrize("seed", range(5))
def test_a_face_that_turns_and_blinks_is_live(seed):
    verdict = assess(live_sequence(12, seed, start=seed * 0.7))
    assert verdict.live and verdict.score >= 0.5, verdict
    assert "parallax" in verdict.reasons


def test_a_blink_alone_is_enough_and_named():
    frames = live_sequence(12, 1, yaw_deg=0.0)  # no turn at all: t = 2.0-2.3 s has the eyes shut
    verdict = assess(frames)
    assert verdict.live and verdict.reasons == ("blink",), verdict
    assert not assess(frames, LivenessParams(require="motion")).live


def test_a_turn_alone_is_enough_and_named():
    verdict = assess(live_sequence(12, 2, blinks=False))
    assert verdict.live and verdict.reasons == ("parallax",), verdict
    both = assess(live_sequence(12, 2, blinks=False), LivenessParams(require="both"))
    assert not both.live and both.reasons == ("no_blink",), both


def test_eyes_that_close_and_stay_closed_are_not_a_blink():
    model, rng = face3d(), np.random.default_rng(3)
    frames = [frame(blink(model, 1.0 if i >= 6 else 0.0), i / FPS, rng) for i in range(12)]
    assert assess(frames, LivenessParams(require="blink")).reasons == ("no_blink",)


# ---- flat pictures

@pytest.mark.parametrize("name,move", [
    ("still", lambda t: similarity(0, 1, 0, 0)),
    ("hw-sim's rigid moves", rigid_moves),
    ("translation", lambda t: similarity(0, 1, 60 * math.sin(t), 30 * math.cos(t))),
    ("rotation", lambda t: similarity(15 * math.sin(2 * t), 1, 0, 0)),
    ("closer", lambda t: similarity(0, 1 + 0.3 * t / 3, 0, 0)),
    ("tilted towards the camera", lambda t: homography(0.0012 * math.sin(2 * t), 0.0008 * math.cos(2 * t))),
])
def test_a_flat_picture_moved_is_not_live(name, move):
    for seed in range(5):
        verdict = assess(flat_sequence(12, seed, move))
        assert not verdict.live and verdict.score < 0.5, (name, verdict)
        assert verdict.reasons[0] == "no_blink", verdict
        assert verdict.reasons[1] == ("no_motion" if name == "still" else "rigid_motion"), (name, verdict)


def test_too_few_frames_or_too_short_a_time_is_not_live():
    frames = live_sequence(12, 0)
    for short in (frames[:0], frames[:1], frames[:5]):
        assert assess(short) == liveness.LivenessVerdict(False, ("too_few_frames",), 0.0)
    fast = live_sequence(12, 0, fps=15.0)[:8]  # 8 frames in under half a second
    assert assess(fast).reasons == ("too_few_frames",)
    old_and_new = frames[:7] + [FaceFrame(f.landmarks, f.box, f.crop, f.at_ms + 60_000) for f in frames[7:]]
    assert assess(old_and_new).reasons == ("too_few_frames",)  # the window keeps only the newest 4 s


def test_frames_in_any_order_give_the_same_verdict():
    frames = live_sequence(12, 4)
    assert assess(frames[::-1]) == assess(frames)


def test_malformed_frames_are_left_out_and_named():
    frames = live_sequence(12, 5)
    bad = [FaceFrame({**f.landmarks, "left_eye": [(1, 2)]}, f.box, f.crop, f.at_ms) for f in frames]
    assert assess(bad).reasons == ("too_few_frames", "bad_landmarks")
    mixed = frames + bad[:3]
    assert assess(mixed).live  # the good ones still decide


def test_params_are_checked():
    for wrong in ({"require": "either"}, {"min_frames": 1}, {"blink_dip": 1.5}, {"parallax": 0}):
        with pytest.raises(ValueError):
            LivenessParams(**wrong)


# ---- properties

@settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(angle=st.floats(-30, 30), scale=st.floats(0.6, 1.6), dx=st.floats(-80, 80), dy=st.floats(-60, 60),
       tilt=st.floats(-0.0015, 0.0015), seed=st.integers(0, 2**32 - 1))
def test_no_move_of_a_flat_picture_is_live(angle, scale, dx, dy, tilt, seed):
    """Any path from the still picture to a rotated, scaled, shifted and tilted one, sampled in 12 frames."""
    def move(t: float) -> Callable[[np.ndarray], np.ndarray]:
        k = t / 3.0
        sim, per = similarity(angle * k, 1 + (scale - 1) * k, dx * k, dy * k), homography(tilt * k, -tilt * k / 2)
        return lambda p: per(sim(p))
    verdict = assess(flat_sequence(12, seed, move))
    assert not verdict.live, verdict


HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50), st.just("\u202e\x00\ud800"), st.binary(max_size=20),
    st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.integers()), max_size=20),
    st.lists(st.lists(st.integers(-(2**70), 2**70), max_size=3), max_size=20),
    st.just([[[[[1]]]]]), st.just("x" * 100_000))


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


NESTED = _nested(3000)
STILL = flat_sequence(8, 11, lambda t: similarity(0, 1, 0, 0))


@settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_landmarks_never_raise_and_are_never_live(data):
    """Whatever the worker hands over (it should not: this is the check's own armour), a verdict comes back,
    and corrupting any region of a few frames of a still picture never makes it live."""
    frames: list[object] = []
    for f in STILL:
        landmarks: dict[object, object] = dict(f.landmarks)
        for region in data.draw(st.lists(st.sampled_from([*SHAPE, "\u202e", ""]), max_size=3)):
            landmarks[region] = data.draw(st.one_of(HOSTILE_VALUES, st.just(NESTED)))
        at_ms = data.draw(st.one_of(st.just(f.at_ms), HOSTILE_VALUES))
        frames.append(FaceFrame(landmarks, f.box, f.crop, at_ms))  # type: ignore[arg-type]
    frames += data.draw(st.lists(HOSTILE_VALUES, max_size=3))
    verdict = assess(frames)  # type: ignore[arg-type]
    assert isinstance(verdict.live, bool) and 0.0 <= verdict.score <= 1.0 and verdict.reasons
    assert not verdict.live


def test_cost_per_window_is_small():
    """12 frames (the worker's window at 4 fps): well under a millisecond or two, measured here."""
    import time
    frames = live_sequence(12, 0)
    assess(frames)
    start = time.perf_counter()
    for _ in range(50):
        assess(frames)
    per_call_ms = (time.perf_counter() - start) / 50 * 1000
    assert per_call_ms < 100, per_call_ms  # ~2 ms on an idle core; generous: the machine is loaded
