"""Extra consumers the camera process loads for tests (``DOORPHONE_CAMERA_CONSUMERS=tests.camera_consumers:NAME``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from doorphoned.core.frames import FrameSubscription

SLEEP = 5.0


def sleepy(subscription: FrameSubscription, emit: Callable[..., None]) -> None:
    """A consumer far slower than the camera: takes a frame, then sleeps. The others must not notice."""
    while True:
        frame: Any = subscription.get(10.0)
        if frame is not None:
            time.sleep(SLEEP)
