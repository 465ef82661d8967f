"""Enrolment and ``access check --face``: a photo from outside into a template, in a process of its own.

``python -m doorphoned.face.enrol`` reads one JSON request on stdin and writes one JSON answer on stdout,
then exits. The daemon runs it for ``face enrol``, the cloud's ``face.upsert`` with a photo and
``access check --face``: the untrusted image is decoded (:mod:`doorphoned.face.imagecheck`) and dlib runs
in this short-lived process, never in the daemon (whose loop must keep doors answering, and whose memory
must not grow by dlib's 200 MB). A decoder crash costs this process, not the unit.

The duplicate check reads the templates from the store itself (read-only, opened with the device key):
a photo whose face is within the threshold of *another* user's template is refused, naming that user;
the templates are never sent across a pipe.

Request: ``{"op": "enrol"|"check", "user": id, "photos": [base64...], "db": path, "key": path,
"threshold": x, "margin": x, "limits": {min_eye_distance, min_sharpness, min_brightness}}``.
Answer: ``{"ok": true, "templates": [[128 floats]...], "quality": [...]}`` (enrol), ``{"ok": true, "match":
{...}, "faces": n}`` (check), or ``{"ok": false, "reason": word, "message": text, "photo": index}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from doorphoned.core.devicekey import DeviceKey
from doorphoned.face.engine import FaceEngine
from doorphoned.face.imagecheck import Box, PhotoError, Quality, QualityLimits, decode_photo, one_face, quality
from doorphoned.face.matcher import Matcher, judge
from doorphoned.face.store import Gallery, load_gallery

MAX_PHOTOS = 10
MAX_REQUEST = 64 * 1024 * 1024


@dataclass(frozen=True)
class Enrolled:
    template: npt.NDArray[np.float32]
    quality: Quality


def faces_in_photo(engine: FaceEngine, rgb: npt.NDArray[np.uint8]) -> list[Box]:
    """The faces of a photo: HOG at the photo's size first, upsampled only when that finds none.

    At its own size HOG finds faces from ~80 px wide, larger than any face the enrolment's eye-distance rule
    accepts (40 px between the eyes is a face ~100 px wide), at a quarter of the upsampled search's cost
    (0.36 s instead of 1.28 s on a 2204 x 970 photo). The upsampled pass still runs on a photo where nothing
    was found, so that a small face is refused as ``face_too_small``, not as ``no_face``."""
    return engine.locate(rgb, 0) or engine.locate(rgb, 1)


def enrol_photo(engine: FaceEngine, data: bytes, limits: QualityLimits) -> Enrolled:
    """One enrolment photo's template, or :class:`PhotoError` with the reason it is refused."""
    rgb = decode_photo(data)
    box = one_face(faces_in_photo(engine, rgb))
    marks = engine.landmarks(rgb, [box], points="5")  # the eye corners are enough for the eye distance
    found = quality(rgb, box, marks[0] if marks else {}, limits)
    return Enrolled(engine.encode(rgb, [box])[0], found)


def duplicate_of(template: npt.NDArray[np.float32], gallery: Gallery, user_id: str,
                 threshold: float) -> tuple[str, float] | None:
    """Another user whose template is within ``threshold`` of this one (the nearest such), if any."""
    others = [i for i, owner in enumerate(gallery.owners) if owner != user_id]
    if not others:
        return None
    owners = tuple(gallery.owners[i] for i in others)
    matcher = Matcher(Gallery(owners, gallery.matrix[others], gallery.version))
    match = matcher.match(template)
    if match.best_user is not None and match.best_distance <= threshold:
        return match.best_user, match.best_distance
    return None


def _gallery(request: dict[str, Any]) -> Gallery:
    key = DeviceKey(Path(str(request["key"])).read_bytes())
    db = sqlite3.connect(f"file:{request['db']}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        return load_gallery(db, key)
    finally:
        db.close()


def _photos(request: dict[str, Any]) -> list[bytes]:
    photos = request.get("photos")
    if not isinstance(photos, list) or not 1 <= len(photos) <= MAX_PHOTOS:
        raise PhotoError("photos", f"1 to {MAX_PHOTOS} photos")
    try:
        return [base64.b64decode(p, validate=True) for p in photos if isinstance(p, str)]
    except (binascii.Error, ValueError) as exc:
        raise PhotoError("corrupt", "a photo is not valid base64") from exc


def enrol(request: dict[str, Any], engine: FaceEngine) -> dict[str, Any]:
    limits = QualityLimits(**{k: float(v) for k, v in dict(request.get("limits") or {}).items()})
    user_id, threshold = str(request["user"]), float(request["threshold"])
    gallery = _gallery(request)
    templates, measures = [], []
    for index, data in enumerate(_photos(request)):
        try:
            enrolled = enrol_photo(engine, data, limits)
        except PhotoError as exc:
            return {"ok": False, "reason": exc.reason, "message": str(exc), "photo": index}
        twin = duplicate_of(enrolled.template, gallery, user_id, threshold)
        if twin is not None:
            return {"ok": False, "reason": "duplicate", "photo": index, "other_user": twin[0],
                    "message": f"the face matches user {twin[0]!r} (distance {twin[1]:.3f}): a duplicate "
                               "enrolment is refused"}
        templates.append([float(v) for v in enrolled.template])
        measures.append(enrolled.quality.to_dict())
    return {"ok": True, "templates": templates, "quality": measures}


def check(request: dict[str, Any], engine: FaceEngine) -> dict[str, Any]:
    """The largest face of one photo against every template: what the worker would conclude of it."""
    try:
        rgb = decode_photo(_photos(request)[0])
    except PhotoError as exc:
        return {"ok": False, "reason": exc.reason, "message": str(exc), "photo": 0}
    boxes = faces_in_photo(engine, rgb)
    if not boxes:
        return {"ok": False, "reason": "no_face", "message": "no face found in the photo", "photo": 0}
    probe = engine.encode(rgb, boxes[:1])[0]
    match = Matcher(_gallery(request)).match(probe)
    verdict = judge(match, float(request["threshold"]), float(request["margin"]))
    return {"ok": True, "faces": len(boxes), "match": match.to_dict(), "user": verdict.user,
            "verdict": verdict.reason}


def main() -> int:
    raw = sys.stdin.buffer.read(MAX_REQUEST + 1)
    try:
        if len(raw) > MAX_REQUEST:
            raise ValueError("request too large")
        request = json.loads(raw)
        if not isinstance(request, dict):
            raise ValueError("request must be an object")
        engine = FaceEngine()
        answer = enrol(request, engine) if request.get("op") == "enrol" else check(request, engine)
    except (ValueError, KeyError, TypeError, OSError, sqlite3.Error) as exc:
        answer = {"ok": False, "reason": "request", "message": f"{type(exc).__name__}: {str(exc)[:200]}"}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
