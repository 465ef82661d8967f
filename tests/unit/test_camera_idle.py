"""The idle gate's pure parts: the change detector on the pictures hw-sim makes (JPEG-encoded, then the
reduced greyscale decode the MJPEG path uses), and the activity deadline/holds on a fake clock."""

from __future__ import annotations

import cv2
import numpy as np

from doorphoned.camera.capture import Activity, ChangeDetector


def reduced(picture: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)


def grey(level: int = 128) -> np.ndarray:
    return np.full((480, 640, 3), level, np.uint8)


def noisy(sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(grey().astype(np.int16) + rng.normal(0, sigma, (480, 640, 3)), 0, 255).astype(np.uint8)


def test_sensor_noise_does_not_wake_the_camera():
    detector, rng = ChangeDetector(0.01), np.random.default_rng(1)
    detector.changed(reduced(noisy(8, rng)))
    assert not any(detector.changed(reduced(noisy(8, rng))) for _ in range(20))


def test_a_slow_brightness_ramp_does_not_wake_it_but_a_light_switched_on_does():
    detector = ChangeDetector(0.01)
    detector.changed(reduced(grey(60)))
    assert not any(detector.changed(reduced(grey(60 + step))) for step in range(1, 150, 2))  # 2 levels a frame
    assert detector.changed(reduced(grey(240)))


def test_a_hand_or_a_phone_raised_to_the_lens_wakes_it():
    detector = ChangeDetector(0.01)
    detector.changed(reduced(grey()))
    picture = grey()
    cv2.circle(picture, (320, 240), 60, (30, 30, 30), -1)  # ~2 % of the picture
    assert detector.changed(reduced(picture))


def test_activity_deadline_and_holds():
    now = [100.0]
    activity = Activity(lambda: now[0])
    assert not activity.active()
    activity.wake(3)
    now[0] += 2.9
    assert activity.active()
    now[0] += 0.2
    assert not activity.active()
    activity.hold("monitor", True)
    now[0] += 1000
    assert activity.active() and activity.held == ["monitor"]
    activity.hold("monitor", False)
    assert not activity.active()
