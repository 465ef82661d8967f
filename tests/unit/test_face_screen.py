"""The screen cue on synthetic and real pictures: a pixel grid (as a camera sees a screen: tilted, aliased,
JPEG-compressed) scores high; a face photo, noise and smooth texture score low; a blank, tiny or malformed
region gives no verdict, and nothing makes it raise or return NaN. Then the cue in ``liveness.assess``.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from doorphoned.face.config import FaceConfig
from doorphoned.face.liveness import LivenessParams, assess
from doorphoned.face.observations import FaceFrame
from doorphoned.face.screen import MIN_SIDE, grey_face, screen_score
from doorphoned.face.worker import Output, Settings, Worker
from tests.facephotos import photos
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text
from tests.unit.test_face_liveness import flat_sequence, live_sequence, similarity

THRESHOLD = LivenessParams().screen_threshold


def _jpeg(image: np.ndarray) -> np.ndarray:
    """Through the camera's JPEG (hw-sim's quality 85) and back, as the worker receives frames."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if image.ndim == 2 else cv2.IMREAD_COLOR)


def _skin(side: int, seed: int) -> np.ndarray:
    """A smooth, skin-like texture: blurred noise (a 1/f-ish spectrum) around grey 140, with sensor noise."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 40, (side, side)), (0, 0), 4) + 140
    return np.clip(base + rng.normal(0, 2.5, (side, side)), 0, 255).astype(np.uint8)


def _gridded(image: np.ndarray, pitch: float, degrees: float, depth: float = 0.5) -> np.ndarray:
    """``image`` with a screen's row and column grid (pitch in pixels, tilted), integrated per pixel."""
    fine = 4
    ys, xs = np.mgrid[0:image.shape[0] * fine, 0:image.shape[1] * fine] / fine
    a = math.radians(degrees)
    u = (xs * math.cos(a) + ys * math.sin(a)) / pitch
    v = (-xs * math.sin(a) + ys * math.cos(a)) / pitch
    lit = (((u % 1) < 0.7) & ((v % 1) < 0.8)).astype(np.float64)
    grid = lit.reshape(image.shape[0], fine, image.shape[1], fine).mean(axis=(1, 3))
    out = image * (1 - depth + depth * grid / grid.mean())
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("pitch", "degrees"), [(1.35, 3.0), (1.2, 0.0), (2.5, 7.0), (3.0, 1.0)])
def test_a_screen_grid_scores_high_even_through_jpeg(pitch, degrees):
    score = screen_score(_jpeg(_gridded(_skin(160, 1), pitch, degrees)))
    assert score is not None and score >= 2 * THRESHOLD, score


@pytest.mark.parametrize("seed", range(4))
def test_skin_texture_and_noise_score_low(seed):
    rng = np.random.default_rng(seed)
    for image in (_skin(160, seed), _jpeg(_skin(160, seed)),
                  rng.integers(0, 256, (160, 160), dtype=np.uint8), _jpeg(rng.normal(128, 20, (200, 150)).clip(0, 255)
                                                                           .astype(np.uint8))):
        score = screen_score(image)
        assert score is not None and score < THRESHOLD / 2, score


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"])
def test_the_real_test_photos_score_low_at_camera_size_and_at_their_own(name):
    """face_recognition's example photos: each face region as the photo has it, and the photo shown to the
    camera (scaled into 640x480, JPEG 85): far under the threshold (a false reject would be a screen)."""
    import face_recognition

    photo = cv2.imread(str(photos() / name))
    scale = min(640 / photo.shape[1], 480 / photo.shape[0])
    framed = _jpeg(cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    for image in (photo, framed):
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        boxes = face_recognition.face_locations(rgb, 1)
        assert boxes
        score = screen_score(grey_face(rgb, boxes[0]))
        assert score is not None and score < THRESHOLD * 0.7, (name, image.shape, score)


def test_no_verdict_on_blank_tiny_or_malformed_regions():
    assert screen_score(np.zeros((200, 200), np.uint8)) is None  # blank
    assert screen_score(np.full((200, 200, 3), 255, np.uint8)) is None  # over-exposed
    assert screen_score(np.zeros((1, 1), np.uint8)) is None
    assert screen_score(_skin(MIN_SIDE - 1, 0)) is None
    assert screen_score(np.zeros((0, 0), np.uint8)) is None
    nan = _skin(100, 0).astype(np.float64)
    nan[5, 5] = math.nan
    inf = _skin(100, 0).astype(np.float64)
    inf[50, 50] = math.inf
    assert screen_score(nan) is None and screen_score(inf) is None
    assert screen_score(np.zeros((100, 100, 4), np.uint8)) is None  # not BGR
    assert screen_score(np.zeros((100, 100), bool)) is None
    assert screen_score(_skin(100, 0).astype(np.float64) * 1e300) is None  # absurd levels
    assert screen_score(np.zeros((100, 100), object)) is None
    assert screen_score(np.zeros((4, 100, 100, 3), np.uint8)) is None
    assert screen_score("a picture") is None  # type: ignore[arg-type]
    assert grey_face(np.zeros((10, 10, 3), np.uint8), (50, 60, 70, 40)).size == 0  # a box off the frame


def test_a_huge_region_is_scored_on_its_centre_quickly():
    huge = np.tile(_skin(256, 3), (16, 16))  # 4096 x 4096
    score = screen_score(huge)
    assert score is not None and math.isfinite(score)


@settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(st.sampled_from([np.uint8, np.int16, np.float32, np.float64]),
                  hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=90),
                  elements={"allow_nan": True, "allow_infinity": True}))
def test_any_array_gives_a_finite_score_or_none(array):
    try:
        score = screen_score(array)
    except Exception as exc:  # pragma: no cover - the failure message
        raise AssertionError(f"raised {exc!r}") from exc
    assert score is None or (math.isfinite(score) and score >= 0)


def _with_screen(frames: list[FaceFrame], scores: list[object]) -> list[FaceFrame]:
    return [FaceFrame(f.landmarks, f.box, f.crop, f.at_ms, s) for f, s in zip(frames, scores, strict=True)]  # type: ignore[arg-type]


def test_a_live_face_on_a_screen_is_refused_naming_the_screen():
    frames = live_sequence(16, seed=1)
    assert assess(frames).live
    on_screen = _with_screen(frames, [THRESHOLD * 4] * 16)
    verdict = assess(on_screen)
    assert (verdict.live, verdict.reasons) == (False, ("screen",)) and verdict.score < 0.5
    assert assess(on_screen, LivenessParams(screen=False)).live  # the cue off: ignored
    assert not assess(on_screen, LivenessParams(screen_threshold=THRESHOLD * 3.9)).live
    assert assess(on_screen, LivenessParams(screen_threshold=THRESHOLD * 4.1)).live


def test_a_photo_on_a_screen_names_both_the_missing_cues_and_the_screen():
    frames = flat_sequence(16, 2, lambda t: similarity(5 * math.sin(t), 1.0, 20 * math.sin(t), 0))
    verdict = assess(_with_screen(frames, [THRESHOLD * 3] * 16))
    assert not verdict.live and verdict.reasons == ("no_blink", "rigid_motion", "screen"), verdict


def test_the_screen_cue_takes_the_median_and_ignores_frames_without_a_score():
    frames = live_sequence(16, seed=3)
    glints = [THRESHOLD * 10 if i % 3 == 0 else 4.5 for i in range(16)]  # a third of the frames: still a person
    assert assess(_with_screen(frames, glints)).live
    few = [THRESHOLD * 10, THRESHOLD * 10] + [None] * 14  # two scored frames: fewer than screen_frames
    assert assess(_with_screen(frames, few)).live
    junk = [math.nan, math.inf, True, "99", [99], -math.inf, None, 1e308] * 2  # malformed: ignored
    assert assess(_with_screen(frames, junk)).live


def test_a_screen_swapped_in_after_a_print_is_not_diluted_by_the_prints_frames():
    """A window that mixes a print's low scores with a screen's high ones (the attacker swaps one for the
    other in front of the lens): the screen's consecutive frames veto though the window's median is low."""
    frames = live_sequence(16, seed=3)
    swapped = [4.5] * 11 + [THRESHOLD * 4] * 5  # 11 frames of the print, then 5 of the phone
    verdict = assess(_with_screen(frames, swapped))
    assert not verdict.live and verdict.reasons[-1] == "screen", verdict
    one = [4.5] * 15 + [THRESHOLD * 4]  # one high frame at the end: a glint, no run of them
    assert assess(_with_screen(frames, one)).live
    apart = [THRESHOLD * 4 if i % 3 == 2 else 4.5 for i in range(16)]  # high frames never two in three
    assert assess(_with_screen(frames, apart)).live


LIVENESS_KEYS = ("liveness_blink_dip", "liveness_parallax", "liveness_patience_s", "liveness_screen",
                 "liveness_screen_threshold")
_values = st.one_of(hostile_numbers, hostile_text, st.booleans(), st.none(),
                    st.recursive(st.lists(st.integers()), lambda inner: st.lists(inner, max_size=3), max_leaves=20))


class _Caught(Output):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, object]]] = []

    def emit(self, ev: str, **fields: object) -> None:
        self.events.append((ev, fields))


@settings(max_examples=fuzz_cases(500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(LIVENESS_KEYS), _values, min_size=1), st.sampled_from(["python", "json"]))
def test_the_workers_liveness_settings_refuse_hostile_values_and_keep_the_check_valid(values, path):
    """The ``configure`` op's liveness settings (what ``worker_settings()`` sends): a value out of range, of the
    wrong type, NaN or infinite is refused with an ``op_error`` (the worker stays unconfigured); an accepted one
    always makes valid ``LivenessParams``."""
    if path == "json":  # as the op arrives: JSON text, NaN/Infinity as tokens, a duplicate key
        try:
            body = json.dumps({"liveness": True, **values}, allow_nan=True)
        except (ValueError, TypeError):
            return
        line = ('{"op": "configure", "settings": ' + body + ', "settings": ' + body + "}").encode()
        worker = Worker(_Caught())
        worker.handle(line)
        events = worker.out.events  # type: ignore[attr-defined]
        assert worker.assess is None or events == [], events
        assert events == [] or events[0][0] == "op_error", events
        return
    try:
        chosen = Settings.from_dict({"liveness": True, **values})
    except (ValueError, TypeError):
        return
    params = LivenessParams(**chosen.liveness_params())
    assert all(math.isfinite(v) for v in (params.blink_dip, params.parallax, params.screen_threshold,
                                          chosen.liveness_patience_s))
    assert isinstance(params.screen, bool)


@pytest.mark.parametrize("depth", [1000, 20_000])
def test_a_deeply_nested_op_is_refused_and_the_ops_reader_lives(depth):
    """A 64 KB op line can nest ~30,000 levels: json raises RecursionError, which used to escape ``handle`` and
    end the worker's ops thread (no more reload or status); now it is an ``op_error`` like any bad op."""
    worker = Worker(_Caught())
    worker.handle(b'{"op": "configure", "settings": {"liveness_parallax": ' + b"[" * depth + b"]" * depth + b"}}")
    worker.handle(b'{"op": "status"}')
    events = [ev for ev, _ in worker.out.events]  # type: ignore[attr-defined]
    assert events[-1] == "stats" and events[0] == "op_error" and worker.assess is None, events


def test_the_worker_turns_the_config_keys_into_the_check():
    """``[face]``'s liveness keys reach the check the worker calls (``worker_settings()`` -> configure)."""
    config = FaceConfig(liveness="on", liveness_blink_dip=0.3, liveness_parallax=0.07, liveness_patience_s=9,
                        liveness_screen=False, liveness_screen_threshold=30.0)
    chosen = Settings.from_dict(json.loads(json.dumps(config.worker_settings())))
    assert (chosen.liveness, chosen.liveness_patience_s) == (True, 9.0)
    assert chosen.liveness_params() == {"blink_dip": 0.3, "parallax": 0.07, "screen": False,
                                        "screen_threshold": 30.0}
    assert Settings.from_dict({}).liveness_params() == {
        "blink_dip": LivenessParams().blink_dip, "parallax": LivenessParams().parallax, "screen": True,
        "screen_threshold": THRESHOLD}  # the worker's defaults are the check's
