"""The latency window behind ``qr_decision_ms``, and the daemon's reading of the camera's frame stamp."""

from __future__ import annotations

import math
import time

import pytest

from doorphoned.camera.feature import FRAME_AT_MAX_AGE, _frame_at
from doorphoned.core.latency import LatencyWindow


def test_an_empty_window_says_so_without_inventing_figures():
    assert LatencyWindow().summary() == {"count": 0, "window": 0, "p50": None, "p99": None, "last": None}


def test_percentiles_are_measured_values_and_the_window_is_bounded():
    window = LatencyWindow(size=100)
    for ms in range(1, 201):  # 1..200: the window keeps 101..200
        window.add(float(ms))
    summary = window.summary()
    assert summary == {"count": 200, "window": 100, "p50": 150.0, "p99": 199.0, "last": 200.0}


def test_one_sample_is_every_percentile():
    window = LatencyWindow()
    window.add(12.345)
    assert window.summary() == {"count": 1, "window": 1, "p50": 12.35, "p99": 12.35, "last": 12.35}


@pytest.mark.parametrize("value", [None, "1.0", True, math.nan, math.inf, -math.inf, [], {}, 10**400, -(10**400),
                                   "\u202e1", "\ud800"])
def test_a_frame_stamp_of_the_wrong_shape_is_no_figure(value):
    assert _frame_at({"frame_at": value}) is None


def test_a_frame_stamp_in_the_future_or_too_old_is_not_believed():
    now = time.monotonic()
    assert _frame_at({"frame_at": now + 60}) is None
    assert _frame_at({"frame_at": now - FRAME_AT_MAX_AGE - 60}) is None
    assert _frame_at({}) is None


def test_a_plausible_frame_stamp_is_kept():
    stamp = time.monotonic() - 0.25
    assert _frame_at({"frame_at": stamp}) == stamp
