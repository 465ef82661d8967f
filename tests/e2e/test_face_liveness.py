"""Liveness on real pixels: hw-sim's face scenes through the real MJPEG stream, decoded, face_recognition's
landmarks (the worker's FaceEngine: HOG on the frame scaled by 0.5, landmarks on the full frame), then
``liveness.assess`` over sliding windows of 12 frames, as the worker sees a face: at most 4 frames a second,
always the newest frame (a reader thread keeps only that one), its time the moment it arrived.

The live scene must be live, the photo scene (a print moved rigidly) and the photo on a phone screen must
not be, on >= 95 % of the windows each. Photos: face_recognition's sdist (tests/facephotos.py).
"""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from doorphoned.camera.mjpeg import MjpegReader, open_http
from doorphoned.face.engine import FaceEngine
from doorphoned.face.liveness import assess
from doorphoned.face.observations import FaceBox, FaceFrame, LivenessVerdict
from tests.e2e.test_captures import _camera_up
from tests.e2e.test_face import _face_entries, _face_status
from tests.facephotos import photos
from tests.procs import wait_for

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

MAX_FPS = 4.0  # the worker's default face.max_fps
WINDOW = 12  # frames: 3 s at 4 fps, one head turn of hw-sim's live scene
FRAMES = 40  # observed per scene: 29 windows, so >= 95 % allows one wrong window


class Latest:
    """The camera's newest frame and its arrival time (ms of time.monotonic()), read on a thread."""

    def __init__(self, url: str) -> None:
        self.sock, stream, boundary = open_http(url, 10.0)
        self.reader = MjpegReader(stream, boundary)
        self.cond = threading.Condition()
        self.frame: tuple[np.ndarray, int] | None = None
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while self.running:
                jpeg = self.reader.next_jpeg()
                at_ms = int(time.monotonic() * 1000)
                with self.cond:
                    self.frame = (cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), at_ms)
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass

    def take(self) -> tuple[np.ndarray, int]:
        with self.cond:
            self.cond.wait_for(lambda: self.frame is not None, 10.0)
            assert self.frame is not None, "no frame from hw-sim's camera"
            frame, self.frame = self.frame, None
            return frame

    def close(self) -> None:
        self.running = False
        self.sock.close()


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


def observe(hwsim, engine: FaceEngine, *scene: str) -> list[FaceFrame]:
    """The FaceFrames of FRAMES frames of a scene, as the worker builds them."""
    hwsim.cmd("camera", "face", *scene)
    latest = Latest(hwsim.info["camera"]["url"])
    frames: list[FaceFrame] = []
    try:
        while len(frames) < FRAMES:
            started = time.monotonic()
            image, at_ms = latest.take()
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            small = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
            boxes = [tuple(round(v / 0.5) for v in b) for b in engine.locate(small, 1)]
            if boxes:
                top, right, bottom, left = boxes[0]
                marks = engine.landmarks(rgb, [boxes[0]])
                grey = cv2.cvtColor(rgb[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
                crop = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
                frames.append(FaceFrame(marks[0], FaceBox(top, right, bottom, left), crop, at_ms))
            time.sleep(max(0.0, 1 / MAX_FPS - (time.monotonic() - started)))
    finally:
        latest.close()
        hwsim.cmd("camera", "clear")
    return frames


def verdicts(frames: list[FaceFrame]) -> list[LivenessVerdict]:
    return [assess(frames[i - WINDOW:i]) for i in range(WINDOW, len(frames) + 1)]


def test_live_scene_is_live_and_a_photo_moved_or_on_a_screen_is_not(hwsim, engine):
    photo = str(photos() / "obama3.jpg")
    results = {}
    for name, scene, want in (("live", ("live", photo), True), ("photo", ("photo", photo), False),
                              ("screen", ("photo", photo, "--screen"), False)):
        frames = observe(hwsim, engine, *scene)
        got = verdicts(frames)
        right = sum(v.live == want for v in got) / len(got)
        fps = (len(frames) - 1) * 1000 / (frames[-1].at_ms - frames[0].at_ms)
        results[name] = (right, round(fps, 2), [v for v in got if v.live != want][:3])
        print(f"liveness {name}: {right:.0%} of {len(got)} windows right at {fps:.1f} frames/s")
    for name, (right, _, _) in results.items():
        assert right >= 0.95, (name, results)


def test_live_scene_of_another_face_and_the_cost_of_a_verdict(hwsim, engine):
    frames = observe(hwsim, engine, "live", str(photos() / "biden.jpg"), "--face-width", "150")
    got = verdicts(frames)
    assert sum(v.live for v in got) / len(got) >= 0.95, got
    assert {r for v in got for r in v.reasons} <= {"blink", "parallax"}
    window = frames[-WINDOW:]
    started = time.perf_counter()
    for _ in range(20):
        assess(window)
    per_verdict_ms = (time.perf_counter() - started) / 20 * 1000
    print(f"liveness: {per_verdict_ms:.2f} ms per verdict over {WINDOW} frames")
    assert per_verdict_ms < 50, per_verdict_ms  # of the 300 ms frame -> decision budget (~2 ms idle)


LIVENESS_UNIT = {"DOORPHONED_FACE_ENABLED": "true", "DOORPHONED_FACE_COOLDOWN_S": "3",
                 "DOORPHONED_FACE_LIVENESS": "on"}


def _liveness_unit(daemon_factory, env: dict[str, str]) -> tuple[object, str]:
    """A unit with liveness on (and ``env``), its worker ready, obama.jpg enrolled as "Barack"."""
    d = daemon_factory(env={**LIVENESS_UNIT, **env})
    d.start()
    _camera_up(d)
    wait_for(lambda: _face_status(d)["face"] == "ok", timeout=120, interval=0.5, what="face worker ready")
    user = d.ctl_json("user", "add", "Barack")["id"]
    d.ctl_json("face", "enrol", user, "--photo", str(photos() / "obama.jpg"))
    wait_for(lambda: _face_status(d).get("templates") == 1, timeout=30, what="the worker loaded the template")
    return d, user


def _refused_scene(d, hwsim, before: int, *scene: str) -> dict:
    """Show a face scene; the first face decision after the ``before`` ones already logged (the log is listed
    newest first; one read per poll, so a decision logged between two reads cannot shift the slice)."""
    hwsim.cmd("camera", "face", *scene)

    def new_entries() -> list[dict]:
        entries = _face_entries(d)
        return entries[:len(entries) - before]

    try:
        entry = wait_for(new_entries, timeout=180, interval=0.5, what=f"a decision on {scene}")[-1]
    except AssertionError as exc:
        camera = next(f for f in d.ctl_json("status")["features"] if f["name"] == "camera")
        raise AssertionError(f"{exc}: face status {_face_status(d)}, camera {camera}, log {d.log_text()[-3000:]}, "
                             f"hw-sim log {hwsim.log.read_text()[-2000:]}") from None
    hwsim.cmd("camera", "clear")
    time.sleep(2.5)  # the worker's presence ends (no face for 2 s)
    return entry


def test_through_the_unit_a_photo_and_a_replayed_video_are_refused_liveness_and_the_live_face_opens(
        daemon_factory, hwsim):
    """Enrolled from obama.jpg; hw-sim shows obama3.jpg held up as a print, then as a video of the live face
    replayed on a phone screen, then as a live face: one daemon for the three scenes."""
    d, user = _liveness_unit(daemon_factory, {})
    photo = str(photos() / "obama3.jpg")
    refused = _refused_scene(d, hwsim, 0, "photo", photo)
    assert (refused["reason"], refused["user_id"], refused["granted"]) == ("liveness", user, False), refused
    why = refused["detail"]["detail"]
    assert why.startswith("not a live face (no_blink,") and "screen" not in why, refused

    screen = _refused_scene(d, hwsim, len(_face_entries(d)), "live", photo, "--screen")
    assert (screen["reason"], screen["user_id"], screen["granted"]) == ("liveness", user, False), screen
    # It blinks and turns: `screen` alone, or after `no_blink,rigid_motion` when a loaded worker's frames missed both
    assert screen["detail"]["detail"].endswith("screen)"), screen
    assert hwsim.relay(1)["energise_count"] == 0  # nothing opened

    refusals = len(_face_entries(d))  # the photo's, refused again after each cooldown while it was held up
    hwsim.cmd("camera", "face", "live", str(photos() / "obama3.jpg"))
    try:
        granted = wait_for(lambda: [e for e in _face_entries(d) if e["granted"]], timeout=180, interval=0.5,
                           what="the live face opens")[0]
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_face_entries(d)[refusals:]}, face status {_face_status(d)}") from None
    assert granted["user_id"] == user and granted["door"] == 1
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised")
    assert {e["reason"] for e in _face_entries(d) if not e["granted"]} == {"liveness"}
    entries = _face_entries(d)  # newest first
    assert all(e["granted"] for e in entries[:len(entries) - refusals]), entries  # the live face: never refused


def test_bad_face_scene_requests_are_refused_with_a_reason(hwsim, tmp_path):
    """From the CLI and as raw JSON: a clear error, the scene unchanged, hw-sim alive."""
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((200, 200, 3), 128, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8not a jpeg")
    photo = str(photos() / "obama.jpg")
    for args, words in ((("live", str(tmp_path / "grey.png")), "no face found"),
                        (("live", str(tmp_path / "broken.jpg")), "cannot read image"),
                        (("live", str(tmp_path / "missing.jpg")), "cannot read image"),
                        (("smile", photo), "live or photo"), (("live",), "needs a photo"),
                        (("live", photo, "--face-width", "9999"), "40-400")):
        result = hwsim.cmd("camera", "face", *args, check=False)
        assert result.returncode != 0 and words in result.stderr, (args, result.stderr)
    control, replies = hwsim.control()
    try:
        for line in (b'{"op": "camera", "action": "face", "kind": "live", "path": "%s", "face_width": Infinity}',
                     b'{"op": "camera", "action": "face", "kind": "live", "path": "%s", "face_width": NaN}',
                     b'{"op": "camera", "action": "face", "kind": "live", "path": "%s", "face_width": 2.5}',
                     b'{"op": "camera", "action": "face", "kind": ["live"], "path": "%s"}',
                     b'{"op": "camera", "action": "face", "kind": "photo", "path": "%s", "screen": "yes"}',
                     b'{"op": "camera", "action": "face", "kind": "live", "path": 7}'):
            control.sendall(line.replace(b"%s", photo.encode()) + b"\n")
            reply = json.loads(replies.readline())
            assert reply["ok"] is False and reply["error"], (line, reply)
    finally:
        control.close()
    assert json.loads(hwsim.cmd("info", "--json").stdout)["camera"]["showing"] == "grey"
    hwsim.cmd("camera", "face", "photo", photo, "--screen")  # and it still works
    assert json.loads(hwsim.cmd("info", "--json").stdout)["camera"]["showing"] == "face photo obama.jpg (screen)"
    hwsim.cmd("camera", "face", "live", photo, "--screen")  # the live face replayed on a screen
    assert json.loads(hwsim.cmd("info", "--json").stdout)["camera"]["showing"] == "face live obama.jpg (screen)"


def test_the_liveness_keys_take_effect_with_the_screen_cue_off_a_replayed_video_opens(daemon_factory, hwsim):
    """``face.liveness_screen = false`` (and a shorter patience): the screen scene's blinks and turns pass."""
    d, user = _liveness_unit(daemon_factory, {"DOORPHONED_FACE_LIVENESS_SCREEN": "false",
                                              "DOORPHONED_FACE_LIVENESS_PATIENCE_S": "3"})
    hwsim.cmd("camera", "face", "live", str(photos() / "obama3.jpg"), "--screen")
    try:
        granted = wait_for(lambda: [e for e in _face_entries(d) if e["granted"]], timeout=180, interval=0.5,
                           what="the replayed video opens")[0]
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_face_entries(d)}, face status {_face_status(d)}") from None
    finally:
        hwsim.cmd("camera", "clear")
    assert granted["user_id"] == user
    assert not [e for e in _face_entries(d) if "screen" in e["detail"].get("detail", "")]
