"""FaceEngine makes face_recognition's dlib calls itself (to load only the models a process needs): its boxes,
landmarks and templates must be exactly face_recognition's on real photos, or enrolled templates and the
threshold's measured error rates would silently stop meaning what docs/face.md says."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from doorphoned.face.engine import FaceEngine
from doorphoned.face.enrol import faces_in_photo
from tests.facephotos import photos


@pytest.fixture(scope="module")
def fr() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models: "pkg_resources is deprecated"
        import face_recognition
    return face_recognition


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg"])
def test_boxes_landmarks_and_templates_are_face_recognitions(fr: Any, name: str) -> None:
    rgb = fr.load_image_file(str(photos() / name))
    engine = FaceEngine()
    boxes = engine.locate(rgb, 1)
    assert boxes == fr.face_locations(rgb, 1, "hog") and len(boxes) == 1
    assert engine.landmarks(rgb, boxes) == fr.face_landmarks(rgb, boxes, "large")
    assert engine.landmarks(rgb, boxes, points="5") == fr.face_landmarks(rgb, boxes, "small")
    [ours], [theirs] = engine.encode(rgb, boxes), fr.face_encodings(rgb, boxes)
    assert ours.shape == (128,) and np.allclose(ours, theirs, atol=1e-6)


def test_a_template_loads_no_68_point_model_and_the_photo_search_upsamples_only_when_needed(fr: Any) -> None:
    """The enrolment tool's path: a face found at the photo's size; the 95 MB model never loaded."""
    rgb = fr.load_image_file(str(photos() / "obama2.jpg"))
    engine = FaceEngine()
    boxes = faces_in_photo(engine, rgb)
    engine.landmarks(rgb, boxes, points="5")
    engine.encode(rgb, boxes)
    assert boxes == engine.locate(rgb, 0) and "68" not in engine._loaded
    small = np.ascontiguousarray(rgb[::7, ::7])  # faces too small for HOG at this size: the upsampled pass
    assert engine.locate(small, 0) == [] and faces_in_photo(engine, small) == engine.locate(small, 1) != []
