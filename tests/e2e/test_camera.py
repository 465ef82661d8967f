"""The camera feature with real processes: the daemon, its camera process and hw-sim's camera (or a hostile
MJPEG server); what a door unit's owner would see."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import segno

from doorphoned.camera import protocol
from tests.procs import ROOT, wait_for


def _feature(d, name: str) -> dict:
    return next(f for f in d.ctl_json("status")["features"] if f["name"] == name)


def _idle(d) -> dict:
    """Wait for stats taken after now that show the camera idle (stats come every few seconds)."""
    seen = _feature(d, "camera")["frames"]
    return wait_for(lambda: (f := _feature(d, "camera"))["active"] is False and f["frames"] > seen and f,
                    timeout=40, interval=0.5, what="the camera idle")


def _key(d) -> dict:
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return d.ctl_json("tempkey", "create", "--name", "Visitor", "--doors", "1", "--end", end, "--count", "5")


def test_a_qr_code_shown_after_idle_opens(daemon, hwsim):
    wait_for(lambda: _feature(daemon, "qr")["reader"] == "ok", timeout=30, what="QR reader up")
    key = _key(daemon)
    idle = _idle(daemon)
    assert idle["capture"] == "mjpeg"
    hwsim.cmd("camera", "qr", key["qr"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised by QR after idle")
    woke = wait_for(lambda: (f := _feature(daemon, "camera"))["published"] > idle["published"] and f, timeout=20,
                    what="stats after the wake")
    assert woke["changes"] > idle["changes"]  # woken by the change detector, not by continuous decoding
    # The unit times the deciding frame itself: from its arrival in the camera process to the decision.
    decided = wait_for(lambda: (q := _feature(daemon, "qr")["qr_decision_ms"])["count"] >= 1 and q, timeout=20,
                       what="the QR decision timed")
    assert decided["count"] == 1 and decided["window"] == 1, decided
    assert 0 < decided["p50"] == decided["p99"] == decided["last"] < 20_000, decided
    parts = _feature(daemon, "qr")["qr_decision_parts_ms"]  # the camera process's, the pipe's, the daemon's
    assert {part: parts[part]["count"] for part in parts} == {"camera": 1, "pipe": 1, "daemon": 1}, parts
    assert abs(sum(parts[part]["last"] for part in parts) - decided["last"]) < 0.05, (parts, decided)


def test_a_slow_consumer_does_not_slow_qr(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONE_CAMERA_CONSUMERS": "tests.camera_consumers:sleepy",
                            "PYTHONPATH": str(ROOT)})
    d.start()
    wait_for(lambda: _feature(d, "qr")["reader"] == "ok", timeout=30, what="QR reader up")
    key = _key(d)
    hwsim.cmd("camera", "qr", key["qr"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised by QR")
    status = wait_for(lambda: (f := _feature(d, "camera"))["dropped"].get("sleepy", 0) > 10 and f, timeout=40,
                      interval=0.5, what="the sleeper dropping frames")
    # The sleeper takes a frame every 5 s; QR decoding saw the code from its own mailbox, seconds earlier
    # than the sleeper could have handed it on, and dropped (almost) nothing.
    assert status["last_qr_age_ms"] is not None and status["last_qr_age_ms"] < 2500, status
    assert status["dropped"]["qr"] < status["dropped"]["sleepy"], status


# ---- the camera process against hostile MJPEG servers


def _jpeg(picture: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", picture)
    assert ok
    return data.tobytes()


def _qr_jpeg(text: str) -> bytes:
    matrix = np.array(list(segno.make_qr(text, error="m").matrix_iter(border=4)), dtype=np.uint8)
    qr = cv2.resize(np.where(matrix == 1, 0, 255).astype(np.uint8), (300, 300), interpolation=cv2.INTER_NEAREST)
    picture = np.full((480, 640, 3), 128, np.uint8)
    picture[90:390, 170:470] = cv2.cvtColor(qr, cv2.COLOR_GRAY2BGR)
    return _jpeg(picture)


def _part(body: bytes, length: int | None = None, kind: str = "image/jpeg") -> bytes:
    size = len(body) if length is None else length
    head = f"--b\r\nContent-Type: {kind}\r\nContent-Length: {size}\r\n\r\n".encode()
    return head + body + b"\r\n"


def _hostile_round(grey: bytes) -> bytes:
    return b"".join([
        _part(grey),
        os.urandom(20_000).replace(b"--b", b"xxx"),  # garbage between parts
        _part(b"<html>not a picture</html>", kind="text/html"),  # a non-JPEG part
        _part(b"\xff\xd8" + b"\x00" * 1000, length=3_000_000_000),  # a huge Content-Length that lies
        _part(b"\xff\xd8\xff\xe0 broken jpeg"),  # JPEG magic, undecodable
        b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + grey + b"\r\n",  # no Content-Length
    ])


class HostileServer:
    """One connection: ``phase1`` rounds of hostile parts, wait for ``go``, ``phase2`` rounds, a QR part,
    then a part cut short and the connection closed."""

    def __init__(self, phase1: int, phase2: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.go = threading.Event()
        self.phases = (phase1, phase2)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=b\r\n\r\n")
            grey = _jpeg(np.full((480, 640, 3), 128, np.uint8))
            for _ in range(self.phases[0]):
                conn.sendall(_hostile_round(grey))
            self.go.wait(60)
            for _ in range(self.phases[1]):
                conn.sendall(_hostile_round(grey))
            conn.sendall(_part(_qr_jpeg("HOSTILE-SURVIVED")))
            time.sleep(1.0)
            conn.sendall(b"--b\r\nContent-Type: image/jpeg\r\nContent-Length: 50000\r\n\r\n\xff\xd8 only a bit")


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _events(proc: subprocess.Popen[bytes], until: str, timeout: float) -> list[dict]:
    assert proc.stdout is not None
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        name, message = protocol.decode(line, "ev")
        seen.append(message)
        if name == until:
            return seen
    raise AssertionError(f"no {until!r} event; saw {seen}")


def test_hostile_mjpeg_streams_are_skipped_logged_and_memory_stays_flat(tmp_path):
    server = HostileServer(phase1=60, phase2=300)
    log = (tmp_path / "camera.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "doorphoned.camera.process"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log)
    assert proc.stdin is not None
    try:
        assert _events(proc, "hello", 60)[0]["version"] == protocol.VERSION
        proc.stdin.write(protocol.encode({"op": "start", "source": f"http://127.0.0.1:{server.port}/x.mjpg"}))
        proc.stdin.flush()
        _events(proc, "connected", 30)
        time.sleep(2)
        before = _rss_kb(proc.pid)
        server.go.set()
        qr = _events(proc, "qr", 120)[-1]
        after = _rss_kb(proc.pid)
        assert qr["texts"] == ["HOSTILE-SURVIVED"]  # every good part still read, through 360 hostile rounds
        assert after - before < 20_000, (before, after)  # 300 more rounds (~300 MB announced): no growth
        error = _events(proc, "error", 30)[-1]
        assert "cut short" in error["message"]
        assert proc.wait(10) == 1
        text = (tmp_path / "camera.log").read_text()
        assert "skipped" in text and "oversize part" in text
    finally:
        proc.kill()
        proc.wait()
        server.listener.close()


def test_sighup_with_a_changed_camera_section_restarts_the_camera_and_qr_still_opens(tmp_path, daemon_factory, hwsim):
    from tests.e2e.test_config_files import _sim_config

    config = _sim_config(tmp_path, hwsim)
    d = daemon_factory(config=config)
    d.start()
    first = wait_for(lambda: (f := _feature(d, "camera"))["camera"] == "ok" and f["process_pid"], timeout=30,
                     what="camera process")
    config.write_text(config.read_text().replace("qr_doors = [1]", "qr_doors = [1]\nactive_seconds = 6"))
    d.signal(signal.SIGHUP)
    second = wait_for(lambda: (f := _feature(d, "camera"))["camera"] == "ok" and f["process_pid"] != first
                      and f["process_pid"], timeout=60, what="a new camera process with the new settings")
    assert not Path(f"/proc/{first}").exists() or "zombie" in Path(f"/proc/{first}/status").read_text()
    wait_for(lambda: _feature(d, "qr")["reader"] == "ok", timeout=30, what="QR reader up again")
    key = _key(d)
    hwsim.cmd("camera", "qr", key["qr"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised after the reload")
    assert second == _feature(d, "camera")["process_pid"]


def test_a_door_opening_wakes_the_camera(daemon, hwsim):
    wait_for(lambda: _feature(daemon, "camera")["camera"] == "ok", timeout=30, what="camera up")
    idle = _idle(daemon)
    hwsim.cmd("door", "open", "1")  # the door sensor: someone is coming through, the picture has not changed yet
    try:
        woke = wait_for(lambda: (f := _feature(daemon, "camera"))["published"] > idle["published"] and f,
                        timeout=30, interval=0.5, what="full frames after the door opened")
        assert woke["changes"] == idle["changes"]  # woken by the door, not by the picture
    finally:
        hwsim.cmd("door", "close", "1")


def test_the_presence_input_wakes_the_camera_and_a_wake_time_set_live_needs_no_restart(daemon, hwsim):
    """hw-sim's presence sensor (a PIR, a radar or a touch key on the board): someone is at the unit before
    the picture changed, e.g. a face held still for face recognition."""
    wait_for(lambda: _feature(daemon, "camera")["camera"] == "ok", timeout=30, what="camera up")
    doors_before = _feature(daemon, "doors")
    idle = _idle(daemon)
    hwsim.cmd("presence", "on")
    try:
        assert json.loads(hwsim.cmd("inputs", "--json").stdout)["presence"] is True
        woke = wait_for(lambda: (f := _feature(daemon, "camera"))["published"] > idle["published"] and f,
                        timeout=30, interval=0.5, what="full frames after the presence input")
        assert woke["changes"] == idle["changes"]  # woken by the input, not by the picture
    finally:
        hwsim.cmd("presence", "off")
    daemon.ctl("config", "set", "presence.wake_seconds=30")
    assert _feature(daemon, "doors").get("restarts", 0) == doors_before.get("restarts", 0)
    assert hwsim.cmd("presence", "maybe", check=False).returncode == 2


def test_the_generic_opencv_capture_reads_qr_codes_too(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_CAMERA_CAPTURE": "opencv"})  # FFmpeg, as for RTSP / V4L2 sources
    d.start()
    wait_for(lambda: _feature(d, "qr")["reader"] == "ok", timeout=60, what="QR reader up")
    assert _feature(d, "camera")["capture"] == "opencv"
    key = _key(d)
    hwsim.cmd("camera", "qr", key["qr"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=30, what="relay 1 energised by QR")


def test_config_set_of_a_qr_key_keeps_the_camera_process(daemon, hwsim):
    first = wait_for(lambda: (f := _feature(daemon, "camera"))["camera"] == "ok" and f["process_pid"], timeout=30,
                     what="camera process")
    daemon.ctl("config", "set", "camera.qr_doors=[2]")
    wait_for(lambda: _feature(daemon, "qr")["doors"] == [2] and _feature(daemon, "qr")["reader"] == "ok",
             timeout=30, what="the QR reader on door 2")
    assert _feature(daemon, "camera")["process_pid"] == first  # the capture was not interrupted
    key = daemon.ctl_json("tempkey", "create", "--name", "Two", "--doors", "2", "--end",
                          (datetime.now(UTC) + timedelta(days=1)).isoformat())
    hwsim.cmd("camera", "qr", key["qr"])
    wait_for(lambda: hwsim.relay(2)["energise_count"] >= 1, timeout=30, what="relay 2 energised by QR")
