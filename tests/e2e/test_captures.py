"""Captures through the real unit: the daemon, its camera process (which alone loads OpenCV) and hw-sim's
camera. A capture is a private JPEG file and a row; automatic ones follow an access decision without
delaying the door; hostile arguments write nothing; a kill -9 leaves files and rows consistent."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.procs import wait_for

ENV = {"DOORPHONED_CAPTURES_ENABLED": "true", "DOORPHONED_CAPTURES_MIN_FREE_BYTES": "0"}


def _camera_up(d) -> None:
    wait_for(lambda: next(f for f in d.call("status")["features"] if f["name"] == "camera")["camera"] == "ok",
             timeout=60, interval=0.3, what="camera up")


def _files(d) -> list[str]:
    folder = d.state_dir / "captures"
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture
def unit(daemon_factory):
    d = daemon_factory(env=ENV)
    d.start()
    _camera_up(d)
    return d


@pytest.fixture(scope="module")
def shared_unit(shared_daemon_factory):
    """One unit for the module's refusals, which each assert that nothing was written."""
    d = shared_daemon_factory(env=ENV)
    d.start()
    _camera_up(d)
    return d


def test_a_manual_capture_is_a_private_jpeg_listed_in_the_log(unit):
    taken = unit.ctl_json("capture", "--door", "2")
    assert taken["door"] == 2 and taken["size"] > 1000
    listed = unit.ctl_json("log", "captures")
    assert [(c["id"], c["trigger"], c["door"], c["size"]) for c in listed] == [(taken["id"], "manual", 2,
                                                                                  taken["size"])]
    path = unit.state_dir / "captures" / listed[0]["file"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == taken["size"]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[1::-1] == (taken["width"], taken["height"])
    assert f"#{taken['id']}" in unit.ctl("log", "captures").stdout


def test_the_daemon_never_loads_opencv(unit):
    unit.ctl_json("capture")
    maps = Path(f"/proc/{unit.proc.pid}/maps").read_text()
    assert "cv2" not in maps and "opencv" not in maps.lower()


def test_a_granted_open_opens_first_then_a_capture_names_its_log_entry(unit, hwsim):
    before = hwsim.relay(1)["energise_count"]
    unit.ctl("relay", "open", "1")
    assert hwsim.relay(1)["energise_count"] > before  # the door did not wait for the picture
    entry = next(e for e in unit.door_log(kind="access") if e["door"] == 1)
    capture = wait_for(lambda: next((c for c in unit.ctl_json("log", "captures", "--trigger", "granted")), None),
                       timeout=30, what="the automatic capture")
    assert (capture["door"], capture["log_id"]) == (1, entry["id"])
    assert capture["file"] in _files(unit)


@pytest.mark.parametrize("args, words", [(["--door", "0"], "door"), (["--door", "17"], "door"),
                                         (["--door", "-1"], "door")])
def test_hostile_capture_arguments_are_refused_with_nothing_written(shared_unit, args, words):
    unit = shared_unit
    before = _files(unit)
    result = unit.ctl("capture", *args, check=False)
    assert result.returncode != 0 and words in result.stderr
    assert _files(unit) == before and unit.ctl_json("log", "captures") == []


def test_a_switched_off_trigger_takes_nothing_but_manual_works(daemon_factory, hwsim):
    d = daemon_factory(env={**ENV, "DOORPHONED_CAPTURES_TRIGGERS": '["refused"]'})
    d.start()
    _camera_up(d)
    d.ctl("relay", "open", "1")
    taken = d.ctl_json("capture")
    assert [c["id"] for c in d.ctl_json("log", "captures")] == [taken["id"]]


def test_retention_keeps_the_disk_bounded_under_a_burst(daemon_factory):
    d = daemon_factory(env={**ENV, "DOORPHONED_CAPTURES_KEEP_COUNT": "3"})
    d.start()
    _camera_up(d)
    for _ in range(8):
        d.ctl("relay", "open", "1")
        d.ctl_json("capture")
    wait_for(lambda: len(_files(d)) == 3 and len(d.ctl_json("log", "captures")) == 3, timeout=30,
             what="three captures kept")


def test_kill_9_during_captures_leaves_files_and_rows_consistent(daemon_factory):
    d = daemon_factory(env=ENV)
    d.start()
    _camera_up(d)
    for _ in range(3):
        d.ctl_json("capture")
    for _ in range(5):
        d.ctl("relay", "open", "1")
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    d.start()
    listed = d.ctl_json("log", "captures", "--limit", "1000")
    assert sorted(c["file"] for c in listed) == _files(d)
    assert all((d.state_dir / "captures" / c["file"]).stat().st_size == c["size"] for c in listed)
