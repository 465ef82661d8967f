"""The frame stamp survives JPEG and reads back exactly; a frame without one reads as None."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hwsim import stamp


@pytest.mark.parametrize("value", [0, 1, 0xDEADBEEF, 2**32 - 1, 123456789])
def test_a_stamp_survives_a_low_quality_jpeg(value: int) -> None:
    frame = np.random.default_rng(value % 1000).integers(0, 256, (480, 640, 3), np.uint8)
    stamp.draw(frame, value)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    assert stamp.read(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == value


def test_no_stamp_is_not_zero() -> None:
    assert stamp.read(np.full((480, 640, 3), 255, np.uint8)) is None
    assert stamp.read(np.zeros((480, 640, 3), np.uint8)) is None


def test_age_wraps_around() -> None:
    assert stamp.age_ms(stamp.now_ms(10.0), 10.25) == 250
    assert stamp.age_ms(2**32 - 100, (2**32 + 150) / 1000) == 250
