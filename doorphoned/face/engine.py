"""face_recognition's models through dlib, each model loaded on first use, in the processes that need them.

The daemon never imports this module: dlib and its models cost ~200 MB, and a photo from outside is decoded
and analysed in a process of its own (the recognition worker, the enrolment tool).

Why not ``import face_recognition``: it loads all four of its models at import (1.8 s here, most of it the
95 MB 68-point shape predictor), and the enrolment tool, a process per photo, needs only the HOG detector,
the 5-point predictor and the encoder. This class makes the same dlib calls on the same model files
(``face_recognition_models``) as ``face_recognition.face_locations`` / ``face_landmarks`` /
``face_encodings`` do, so templates are identical (tests/unit/test_face_engine.py compares them), and loads
a model only when a call needs it. dlib's objects are not documented as thread-safe: every call holds a lock.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from doorphoned.face.imagecheck import Box

Landmarks = Mapping[str, Sequence[tuple[int, int]]]
MODELS = {"68": "shape_predictor_68_face_landmarks.dat", "5": "shape_predictor_5_face_landmarks.dat",
          "encoder": "dlib_face_recognition_resnet_model_v1.dat"}


def models_dir() -> Path:
    """face_recognition_models' folder, found without importing it (its ``__init__`` imports pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed (pip package face_recognition_models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _named_68(points: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
    """The 68 points named as face_recognition.face_landmarks names them (model "large")."""
    p = points
    return {"chin": p[0:17], "left_eyebrow": p[17:22], "right_eyebrow": p[22:27], "nose_bridge": p[27:31],
            "nose_tip": p[31:36], "left_eye": p[36:42], "right_eye": p[42:48],
            "top_lip": [*p[48:55], p[64], p[63], p[62], p[61], p[60]],
            "bottom_lip": [*p[54:60], p[48], p[60], p[67], p[66], p[65], p[64]]}


def _named_5(points: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
    """The 5 points named as face_recognition.face_landmarks names them (model "small")."""
    return {"nose_tip": [points[4]], "left_eye": points[2:4], "right_eye": points[0:2]}


class FaceEngine:
    def __init__(self) -> None:
        import dlib

        self._dlib: Any = dlib
        self._dir = models_dir()
        self._lock = threading.Lock()
        self._detector: Any = None
        self._loaded: dict[str, Any] = {}

    def _model(self, name: str) -> Any:
        """A model, loaded on first use (call with the lock held)."""
        if name not in self._loaded:
            path = str(self._dir / MODELS[name])
            make = self._dlib.face_recognition_model_v1 if name == "encoder" else self._dlib.shape_predictor
            self._loaded[name] = make(path)
        return self._loaded[name]

    def preload(self, landmarks: bool) -> None:
        """Load what recognition needs now, not at the first face (the 68-point model takes ~1 s to load)."""
        with self._lock:
            for name in ("5", "encoder", *(("68",) if landmarks else ())):
                self._model(name)
            self._hog()

    def _hog(self) -> Any:
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
        return self._detector

    def locate(self, rgb: npt.NDArray[np.uint8], upsample: int = 1) -> list[Box]:
        """Face boxes (HOG), largest first, clipped to the image."""
        with self._lock:
            found = self._hog()(rgb, upsample)
        h, w = rgb.shape[:2]
        boxes: list[Box] = [(max(r.top(), 0), min(r.right(), w), min(r.bottom(), h), max(r.left(), 0))
                            for r in found]
        return sorted(boxes, key=lambda b: -(b[1] - b[3]) * (b[2] - b[0]))

    def _shapes(self, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box], points: str) -> list[Any]:
        predictor = self._model(points)
        return [predictor(rgb, self._dlib.rectangle(left, top, right, bottom)) for top, right, bottom, left in boxes]

    def landmarks(self, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box],
                  points: str = "68") -> list[dict[str, list[tuple[int, int]]]]:
        """Named landmarks per box: the 68-point model (liveness), or the 5-point one (``points="5"``: eye
        corners and nose tip, enough for the eye distance, without loading the 95 MB model)."""
        named = _named_68 if points == "68" else _named_5
        with self._lock:
            shapes = self._shapes(rgb, boxes, points)
        return [named([(p.x, p.y) for p in shape.parts()]) for shape in shapes]

    def encode(self, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box]) -> list[npt.NDArray[np.float32]]:
        """The 128-d template of each box (5-point alignment, one jitter: face_recognition's defaults)."""
        with self._lock:
            encoder = self._model("encoder")
            shapes = self._shapes(rgb, boxes, "5")
            encodings = [encoder.compute_face_descriptor(rgb, shape, 1) for shape in shapes]
        return [np.asarray(e, dtype=np.float32) for e in encodings]
