"""Face recognition through the real unit: doorphonectl enrols from photo files (the enrolment process), hw-sim's
camera shows another photo, the camera process feeds the recognition worker, the gate opens hw-sim's relay.

Photos: face_recognition 1.3.0's sdist test images, downloaded once (tests/facephotos.py), never committed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.e2e.test_captures import _camera_up
from tests.facephotos import photos
from tests.procs import wait_for

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

FACE = {"DOORPHONED_FACE_ENABLED": "true", "DOORPHONED_FACE_COOLDOWN_S": "3"}


def _face_status(d) -> dict:
    return next(f for f in d.call("status")["features"] if f["name"] == "face")  # polled: in-process


def _face_entries(d) -> list[dict]:
    return [e for e in d.door_log(kind="access") if e["credential"] == "face"]


@pytest.fixture
def face_unit(daemon_factory, hwsim):
    d = daemon_factory(env=FACE)
    d.start()
    _camera_up(d)
    wait_for(lambda: _face_status(d)["face"] == "ok", timeout=300, interval=0.5, what="face worker ready")
    return d


def _unknowns(d) -> int:
    """Refusals of unknown faces, counting those folded into an earlier entry (the door log folds repeats)."""
    return sum(e["detail"].get("count", 1) for e in _face_entries(d) if e["reason"] == "unknown")


def _show(hwsim, image: Path) -> None:
    hwsim.cmd("camera", "clear")
    time.sleep(2.5)  # the worker's presence ends (no face for 2 s)
    hwsim.cmd("camera", "show", str(image))


def _group(tmp_path: Path, left: str, right: str) -> Path:
    """Two photos side by side, the same height: a 'group photo' of two people."""
    a, b = (cv2.imread(str(photos() / n)) for n in (left, right))
    height = min(a.shape[0], b.shape[0])
    a, b = (cv2.resize(x, (round(x.shape[1] * height / x.shape[0]), height)) for x in (a, b))
    path = tmp_path / "group.jpg"
    cv2.imwrite(str(path), np.hstack([a, b]))
    return path


def test_enrolled_face_opens_a_stranger_is_refused_a_removed_user_stops(face_unit, hwsim, tmp_path) -> None:
    d, images = face_unit, photos()
    obama = d.ctl_json("user", "add", "Barack")["id"]
    d.ctl_json("user", "add", "Joe")
    enrolled = d.ctl_json("face", "enrol", obama, "--photo", str(images / "obama.jpg"),
                          "--photo", str(images / "obama2.jpg"))
    assert len(enrolled["templates"]) == 2
    wait_for(lambda: _face_status(d).get("templates") == 2, timeout=30, what="the worker loaded the templates")

    _show(hwsim, images / "obama3.jpg")
    granted = wait_for(lambda: [e for e in _face_entries(d) if e["granted"]], timeout=60, interval=0.5,
                       what="the enrolled face opens")[0]
    assert granted["user_id"] == obama and granted["door"] == 1
    assert 0 < granted["detail"]["distance"] <= 0.5
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised")

    _show(hwsim, images / "biden.jpg")
    refused = wait_for(lambda: [e for e in _face_entries(d) if e["reason"] == "unknown"], timeout=60, interval=0.5,
                       what="a stranger is refused")[0]
    assert refused["user_id"] is None and not refused["granted"]
    assert set(refused["detail"]) <= {"detail", "distance", "capture_id"}  # no face data, the distance only

    before = len([e for e in _face_entries(d) if e["granted"]])
    _show(hwsim, _group(tmp_path, "biden.jpg", "obama2.jpg"))
    time.sleep(8)  # the picture's activity window and a few frames
    assert all(e["user_id"] in (obama, None) for e in _face_entries(d))  # nobody else ever opens

    d.ctl("user", "remove", obama)
    db = sqlite3.connect(d.state_dir / "doorphoned.db")
    assert db.execute("SELECT count(*) FROM face_templates").fetchone()[0] == 0  # the file keeps nothing of them
    assert d.ctl_json("face", "list")["users"] == []
    granted_before = len([e for e in _face_entries(d) if e["granted"]])
    assert granted_before >= before
    unknown_before = _unknowns(d)
    _show(hwsim, images / "obama3.jpg")
    energised = hwsim.relay(1)["energise_count"]
    wait_for(lambda: _unknowns(d) > unknown_before, timeout=60, interval=0.5,
             what="the removed user's face refused as unknown")  # folded into the stranger's entry: a repeat
    assert len([e for e in _face_entries(d) if e["granted"]]) == granted_before
    time.sleep(3)  # a grant racing the refusal would energise within this
    assert hwsim.relay(1)["energise_count"] == energised


def test_outside_the_schedule_and_access_check_explains(face_unit, hwsim) -> None:
    d, images = face_unit, photos()
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    other = days[(time.gmtime().tm_wday + 3) % 7]  # a window that is never now
    user = d.ctl_json("user", "add", "Barack", "--schedule", f"{other} 00:00-00:01")["id"]
    d.ctl_json("face", "enrol", user, "--photo", str(images / "obama.jpg"))
    check = d.ctl_json("access", "check", "--door", "1", "--face", str(images / "obama2.jpg"))
    assert check["face"]["best_user"] == user and check["face"]["best_distance"] < check["face"]["threshold"]
    assert check["reason"] == "outside_schedule" and check["face"]["liveness"].startswith("n/a")
    text = d.ctl("access", "check", "--door", "1", "--face", str(images / "biden.jpg")).stdout
    assert "DENIED (unknown)" in text and "threshold" in text
    wait_for(lambda: _face_status(d).get("templates") == 1, timeout=30, what="the worker loaded the template")
    _show(hwsim, images / "obama3.jpg")
    entry = wait_for(lambda: _face_entries(d), timeout=60, interval=0.5, what="a face decision")[0]
    assert (entry["reason"], entry["user_id"], entry["granted"]) == ("outside_schedule", user, False)


def test_enrolment_refusals_store_nothing(face_unit, tmp_path) -> None:
    d, images = face_unit, photos()
    barack = d.ctl_json("user", "add", "Barack")["id"]
    joe = d.ctl_json("user", "add", "Joe")["id"]
    d.ctl_json("face", "enrol", barack, "--photo", str(images / "obama.jpg"))
    cases = {
        "empty.jpg": b"",
        "corrupt.jpg": (images / "obama.jpg").read_bytes()[:2000],
        "text.png": b"not a picture at all",
    }
    from PIL import Image

    Image.new("L", (20000, 20000)).save(tmp_path / "huge.png", optimize=True)  # ~1 MB file, 400 MP
    Image.new("RGB", (640, 480), (128, 128, 128)).save(tmp_path / "noface.jpg")
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    expect = {"empty.jpg": "empty", "corrupt.jpg": "corrupt", "text.png": "format", "huge.png": "too_large",
              "noface.jpg": "no_face"}
    for name, reason in expect.items():
        result = d.ctl("face", "enrol", joe, "--photo", str(tmp_path / name), check=False)
        assert result.returncode == 1 and f"({reason})" in result.stderr, (name, result.stderr)
    group = _group(tmp_path, "biden.jpg", "obama2.jpg")
    result = d.ctl("face", "enrol", joe, "--photo", str(group), check=False)
    assert result.returncode == 1 and "(several_faces)" in result.stderr
    result = d.ctl("face", "enrol", joe, "--photo", str(images / "obama2.jpg"), check=False)
    assert result.returncode == 1 and "(duplicate)" in result.stderr and barack in result.stderr
    assert d.ctl_json("face", "show", joe)["templates"] == []
    assert json.loads(d.ctl("face", "list", "--json").stdout)["total"] == 1
    assert _face_status(d)["face"] == "ok"
