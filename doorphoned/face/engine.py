"""face_recognition (dlib) behind one small class, loaded only in the processes that need it.

The daemon never imports this module: dlib and its models cost ~200 MB and a second of import, and a photo
from outside is decoded and analysed in a process of its own (the recognition worker, the enrolment tool).
dlib's objects are not documented as thread-safe, so every call holds one lock.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from doorphoned.face.imagecheck import Box

Landmarks = Mapping[str, Sequence[tuple[int, int]]]


class FaceEngine:
    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models: "pkg_resources is deprecated"
            import face_recognition

        self._fr: Any = face_recognition
        self._lock = threading.Lock()

    def locate(self, rgb: npt.NDArray[np.uint8], upsample: int = 1) -> list[Box]:
        """Face boxes (HOG), largest first."""
        with self._lock:
            found = self._fr.face_locations(rgb, upsample, "hog")
        boxes: list[Box] = [(int(t), int(r), int(b), int(lf)) for t, r, b, lf in found]
        return sorted(boxes, key=lambda b: -(b[1] - b[3]) * (b[2] - b[0]))

    def landmarks(self, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box]) -> list[dict[str, list[tuple[int, int]]]]:
        with self._lock:
            found: list[dict[str, list[tuple[int, int]]]] = self._fr.face_landmarks(rgb, list(boxes))
        return found

    def encode(self, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box]) -> list[npt.NDArray[np.float32]]:
        with self._lock:
            encodings = self._fr.face_encodings(rgb, list(boxes))
        return [np.asarray(e, dtype=np.float32) for e in encodings]
