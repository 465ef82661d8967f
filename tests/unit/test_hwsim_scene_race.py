"""hw-sim's camera: a rendering of a scene that was replaced while it rendered is not published.

The frame ticker renders moving scenes every frame; a slow one (a face on a screen, ~50 ms) could finish after
``clear`` had published the grey picture and overwrite it, and the still grey scene is never rendered again:
the stream showed the old face frozen (the face worker then saw a screen where the test showed a live face)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
from hwsim.camera import Scene, SimCamera


class _SlowScene(Scene):
    """A moving scene whose rendering waits until the test lets it finish."""

    moving = True

    def __init__(self) -> None:
        super().__init__(np.full((48, 64, 3), 250, np.uint8), "slow")
        self.entered = threading.Event()
        self.release = threading.Event()

    def frame(self, t: float) -> np.ndarray:
        self.entered.set()
        self.release.wait(10)
        return self.picture


def _published_mean(camera: SimCamera) -> float:
    image = cv2.imdecode(np.frombuffer(camera._jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    return float(image.mean())


def test_a_rendering_of_a_replaced_scene_does_not_overwrite_the_new_picture() -> None:
    camera = SimCamera(0)
    slow = _SlowScene()
    slow.release.set()
    camera.set_scene(slow)  # published once, bright
    assert _published_mean(camera) > 200
    slow.release.clear()
    slow.entered.clear()
    ticker = threading.Thread(target=camera._render, args=(0.0,))  # the ticker's next frame of the slow scene
    ticker.start()
    assert slow.entered.wait(10)
    camera.clear()  # grey, published while the slow frame is still being rendered
    slow.release.set()
    ticker.join(10)
    assert abs(_published_mean(camera) - _published_mean_of_grey()) < 5  # the grey picture stayed


def _published_mean_of_grey() -> float:
    camera = SimCamera(0)
    return _published_mean(camera)
