"""Property fuzz of what reaches motion and captures from outside (config, MQTT pushes, cloud commands).

Interfaces: ``MotionSettings.from_dict``, ``CaptureSettings.from_dict`` and a capture request's (trigger,
door, related log id). Generators mix the hostile shapes (tests/fuzz.py): NaN/Infinity as floats and as JSON
tokens, duplicate JSON keys, nesting thousands of levels deep, huge strings and lists, NUL, bidi controls,
lone surrogates, wrong types. Invariants: a clear typed refusal or valid settings (never another exception);
accepted settings hold their own rules and a detector built from them analyses a frame; a refused capture
request leaves no file and no row. `make test` runs a fast pass; `make fuzz-motion` runs >= 10,000 each.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.captures import TRIGGERS, CaptureSettings, CaptureStore
from doorphoned.camera.motion import MotionDetector, MotionSettings, MotionSettingsError
from doorphoned.core.clock import FixedClock
from doorphoned.core.frames import Frame
from doorphoned.core.store import DB_NAME, Store
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

CASES = fuzz_cases(400)
FRAME = Frame(1, 0.0, np.full((48, 64, 3), 128, np.uint8))
MOTION_KEYS = ["enabled", "sensitivity", "min_area", "cooldown_s", "zones", "schedule", "timezone",
               "analysis_width", "learning_rate", "confirm_frames"]


def nested(depth: int) -> object:
    """A list nested ``depth`` levels deep, built without recursion."""
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text, st.integers(-5, 200),
                    st.floats(-0.5, 1.5), st.sampled_from(["Europe/Berlin", "UTC", "mon-fri 08:00-18:00",
                                                           "daily 18:00-06:00", "../../etc/localtime", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                       st.dictionaries(hostile_text | st.sampled_from(["name", "rect"]),
                                                                       inner, max_size=4)), max_leaves=12)
corner = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.integers(-2, 2),
                   st.sampled_from([float("nan"), float("inf"), -0.0, 1e308, 10**400]), hostile_text, st.none())
zone = st.fixed_dictionaries({"rect": st.one_of(st.lists(corner, min_size=4, max_size=4), values)},
                             optional={"name": st.one_of(hostile_text, st.sampled_from(["mat", "path"])),
                                       "extra": values})
huge = st.sampled_from([nested(3000), [{"rect": [0, 0, 1, 1]}] * 10_000, ["daily 00:00-24:00"] * 10_000,
                        "x" * 1_000_000, {"a": nested(5000)}])
json_texts = st.sampled_from([
    '{"zones": [{"rect": [0, 0, NaN, 1]}]}', '{"sensitivity": Infinity}', '{"min_area": -Infinity}',
    '{"cooldown_s": 5, "cooldown_s": NaN}', '{"zones": [{"rect": [0, 0, 1, 1], "rect": [1, 1, 0, 0]}]}',
    '{"timezone": "Europe/Berlin\\u0000"}', '{"zones": [{"name": "\\u202emat", "rect": [0.1, 0.1, 0.2, 0.2]}]}',
    '{"schedule": ["mon-fri 08:00-18:00", "\\ud800"]}', '{"min_area": 1e999}', '{"sensitivity": 50.0}',
])
motion_dicts = st.one_of(
    st.dictionaries(st.sampled_from(MOTION_KEYS), values, max_size=6),
    st.fixed_dictionaries({}, optional={"zones": st.lists(zone, max_size=20), "sensitivity": values,
                                        "min_area": corner, "schedule": st.lists(scalars, max_size=4),
                                        "timezone": scalars, "cooldown_s": corner}),
    st.dictionaries(hostile_text, values, max_size=3),
    json_texts.map(json.loads), huge, huge.map(lambda h: {"zones": h}), values,
)


def check_motion(data: object) -> None:
    try:
        parsed = MotionSettings.from_dict(data)
    except MotionSettingsError as exc:
        assert len(str(exc)) < 400
        return
    for z in parsed.zones:
        assert all(math.isfinite(c) and 0 <= c <= 1 for c in (z.x0, z.y0, z.x1, z.y1)) and z.x0 < z.x1
    assert len(parsed.zones) <= 16 and 1 <= parsed.sensitivity <= 100 and math.isfinite(parsed.cooldown_s)
    detector = MotionDetector(parsed, FixedClock(datetime(2026, 3, 29, 1, 30, tzinfo=UTC)))
    assert detector.feed(FRAME) is None  # the first frame only seeds the background


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(motion_dicts)
def test_motion_settings_from_outside_are_valid_or_refused_clearly(data: object) -> None:
    check_motion(data)


capture_dicts = st.one_of(
    st.dictionaries(st.sampled_from(["triggers", "keep_count", "keep_bytes", "keep_days", "jpeg_quality",
                                     "min_free_bytes"]), st.one_of(values, st.lists(st.sampled_from(
                                         [*TRIGGERS, "doorbell", "\u202ecall"]), max_size=8)), max_size=6),
    st.dictionaries(hostile_text, values, max_size=3), huge, values,
    st.sampled_from(['{"keep_days": NaN}', '{"keep_count": 5, "keep_count": Infinity}', '{"keep_bytes": 1e999}',
                     '{"triggers": ["call", "call", "motion"]}']).map(json.loads),
)


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(capture_dicts)
def test_capture_settings_from_outside_are_valid_or_refused_clearly(data: object) -> None:
    try:
        parsed = CaptureSettings.from_dict(data)
    except CaptureError as exc:
        assert len(str(exc)) < 400
        return
    assert parsed.keep_count >= 1 and math.isfinite(parsed.keep_days) and parsed.keep_days > 0


@pytest.fixture(scope="module")
def capture_store(tmp_path_factory: pytest.TempPathFactory) -> CaptureStore:
    state: Path = tmp_path_factory.mktemp("fuzz-captures")
    store = Store(state / DB_NAME)
    store.open()
    captures = CaptureStore(state, store, CaptureSettings(keep_count=20, min_free_bytes=0,
                                                          triggers=frozenset({"call", "motion"})))
    captures.open()
    return captures


requests = st.tuples(st.one_of(st.sampled_from(TRIGGERS), hostile_text, values),
                     st.one_of(st.none(), st.integers(-3, 20), hostile_numbers, values),
                     st.one_of(st.none(), st.integers(-3, 2**64), hostile_numbers, values))


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests)
def test_a_capture_request_from_outside_is_taken_or_refused_with_nothing_written(
        capture_store: CaptureStore, request: tuple[object, object, object]) -> None:
    trigger, door, log_id = request
    before = (sorted(os.listdir(capture_store.dir)), capture_store.stats()["count"], capture_store.stats()["removed"])
    try:
        taken = capture_store.take(FRAME, trigger, door=door, log_id=log_id)
    except CaptureError as exc:
        assert len(str(exc)) < 400
        after = (sorted(os.listdir(capture_store.dir)), capture_store.stats()["count"],
                 capture_store.stats()["removed"])
        assert after == before  # nothing written, nothing deleted
        return
    assert trigger in ("manual", "call", "motion")
    assert door is None or (type(door) is int and 1 <= door <= 16)
    assert capture_store.get(taken.id).file in os.listdir(capture_store.dir)
