"""hw-sim's camera scenes produce the pixels they claim: frames read back from the real stream and decoded."""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
import zxingcpp
from hwsim import stamp

from doorphoned.camera.mjpeg import MjpegReader, open_http
from tests.procs import wait_for


class Stream:
    """Frames of hw-sim's camera, decoded, as a client sees them."""

    def __init__(self, url: str) -> None:
        self.sock, stream, boundary = open_http(url, 10.0)
        self.reader = MjpegReader(stream, boundary)

    def frame(self) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(self.reader.next_jpeg(), np.uint8), cv2.IMREAD_COLOR)

    def close(self) -> None:
        self.sock.close()


def stream(hwsim) -> Stream:
    """A new connection: its first frame is what the camera shows now (an old connection that was not read
    has seconds of frames queued in its socket)."""
    return Stream(hwsim.info["camera"]["url"])


def now(hwsim) -> np.ndarray:
    """The picture the camera shows at this moment."""
    s = stream(hwsim)
    try:
        return s.frame()
    finally:
        s.close()


def test_still_scenes_grey_qr_and_image(hwsim, tmp_path):
    try:
        assert abs(float(now(hwsim).mean()) - 128) < 2  # grey
        hwsim.cmd("camera", "qr", "DPK1:scene-test")
        found = zxingcpp.read_barcodes(now(hwsim))
        assert [r.text for r in found] == ["DPK1:scene-test"]
        picture = np.zeros((240, 320, 3), np.uint8)
        picture[:, :160] = (0, 0, 255)  # left half red, right half black
        cv2.imwrite(str(tmp_path / "p.png"), picture)
        hwsim.cmd("camera", "show", str(tmp_path / "p.png"))
        frame = now(hwsim)
        assert frame[240, 100, 2] > 200 and frame[240, 100, 0] < 60  # red on the left (scaled to 640x480)
        assert frame[240, 540].max() < 40  # black on the right
    finally:
        hwsim.cmd("camera", "clear")


def _dark_centre_x(frame: np.ndarray) -> float | None:
    dark = np.where(frame[:, :, 1] < 80)
    return float(dark[1].mean()) if dark[1].size else None


def test_moving_object_enters_crosses_and_leaves(hwsim):
    hwsim.cmd("camera", "move", "--speed", "150", "--size", "100")
    s = stream(hwsim)  # read without pause from here: no backlog
    try:
        xs = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            x = _dark_centre_x(s.frame())
            if x is None and xs:
                break  # it has left
            if x is not None:
                xs.append(x)
        assert len(xs) >= 20, xs  # ~5 s across at 15 fps: seen in many frames
        assert xs[-1] > xs[0] + 300 and all(b >= a - 1 for a, b in itertools.pairwise(xs))  # left to right
        assert abs(float(s.frame().mean()) - 128) < 2  # empty scene again
    finally:
        s.close()
        hwsim.cmd("camera", "clear")


def test_sequence_from_a_folder_in_order(hwsim, tmp_path):
    levels = (20, 50, 80, 110, 140, 170, 200, 230)  # eight images, told apart by their grey level
    for i, level in enumerate(levels):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((480, 640, 3), level, np.uint8))
    hwsim.cmd("camera", "fps", "5")
    hwsim.cmd("camera", "sequence", str(tmp_path))
    s = stream(hwsim)
    try:
        got = [round(float(s.frame().mean()) / 10) * 10 for _ in range(24)]
        seen = [levels.index(lv) for lv in got if lv in levels]
        assert len(set(seen)) >= 5, got  # it plays through the folder
        # Always forward, looping: a step of 1, or a few when a loaded reader dropped frames (the stream drops
        # for a slow client); backwards (a step of 5-7 out of 8) never.
        steps = [(b - a) % len(levels) for a, b in itertools.pairwise(seen) if a != b]
        assert all(1 <= step <= 3 for step in steps), got
        assert steps.count(1) >= len(steps) // 2, got
    finally:
        s.close()
        hwsim.cmd("camera", "fps", "15")
        hwsim.cmd("camera", "clear")


def test_brightness_ramp_noise_and_stamp(hwsim):
    try:
        hwsim.cmd("camera", "ramp", "80", "--seconds", "3")
        first = float(now(hwsim).mean())
        wait_for(lambda: float(now(hwsim).mean()) > 200, timeout=20, what="the ramp to reach +80")
        assert first < 200
        hwsim.cmd("camera", "ramp", "0")
        hwsim.cmd("camera", "noise", "12")
        s = stream(hwsim)
        a, b = s.frame().astype(np.int16), s.frame().astype(np.int16)
        s.close()
        assert 6 < float(np.abs(a - b).mean()) < 30 and abs(float(a.mean()) - 128) < 3  # new noise each frame
        hwsim.cmd("camera", "noise", "0")
        hwsim.cmd("camera", "stamp", "on")
        frame = now(hwsim)
        value = stamp.read(frame)
        assert value is not None and stamp.age_ms(value, time.monotonic()) < 5000
        assert abs(float(frame[200:, :].mean()) - 128) < 2  # the stamp stays in its corner
    finally:
        for args in (("ramp", "0"), ("noise", "0"), ("stamp", "off"), ("clear",)):
            hwsim.cmd("camera", *args)


def test_bad_scene_requests_are_refused_with_a_reason(hwsim, tmp_path):
    for args, words in ((("fps", "0"), "fps"), (("fps", "x"), "whole number"), (("noise", "nan"), "sigma"),
                        (("ramp", "999"), "ramp"), (("sequence", str(tmp_path)), "no images"),
                        (("move", "--speed", "0"), "speed"), (("stamp", "maybe"), "on or off")):
        result = hwsim.cmd("camera", *args, check=False)
        assert result.returncode != 0 and words in result.stderr, (args, result.stderr)
    info = hwsim.cmd("info", "--json").stdout
    assert '"fps": 15' in info and '"noise": 0' in info
