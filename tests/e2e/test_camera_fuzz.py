"""Property fuzz of both directions of the camera protocol (``doorphoned/camera/protocol.py``).

- Ops into one long-lived camera process (reading hw-sim's camera): hostile lines on its stdin. Each bad line
  is answered by exactly one ``op_error`` event (a sentinel op after every case marks where its answers end),
  a good one by none, and the process lives and keeps capturing.
- Events into the daemon side (``CameraFeature._event``, in process: pure parsing): hostile lines never raise
  (except the ``error`` event, which is how the process reports a lost camera) and put only well-typed
  events on the bus.

`make test` runs a fast pass; ``make fuzz-camera`` runs 10,000 cases of each (FUZZ_CASES=10000).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.camera import protocol
from doorphoned.camera.config import CameraConfig
from doorphoned.camera.feature import CameraFeature
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import SystemClock
from doorphoned.core.events import CameraStateChanged, Event, QrCodesInView
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

SENTINEL = b'{"op":"__sync__"}\n'
OPS = ["start", "wake", "set-active", "snapshot", "face-feed", "", "__sync__x", "WAKE", "monitor.issue",
       "monitor.revoke", "monitor.viewers"]
KEYS = ["op", "seconds", "consumer", "active", "source", "capture", "fps", "active_seconds", "change_fraction",
        "purpose", "cap", "id", "req", "monitor"]

values = st.one_of(hostile_text, hostile_numbers, st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


objects = st.builds(lambda op, extra: {"op": op, **extra}, st.sampled_from(OPS) | hostile_text,
                    st.dictionaries(st.sampled_from(KEYS), values, max_size=4)).map(_dumps)
raw_lines = st.one_of(
    st.sampled_from([b'{"op":"wake","seconds":NaN}', b'{"op":"wake","seconds":Infinity}',
                     b'{"op":"wake","op":"start"}', b'{"op":"wake","seconds":1,"seconds":2}', b"[" * 5000,
                     b'{"op":' * 3000, b"\x00\x00", b'{"op":"wake\x00"}', b"\xed\xa0\x80", b"\xff\xfe",
                     b'"\\ud800"', b"null", b"[]", b"42", b'{"op":"set-active","consumer":"\\u202e","active":1}']),
    st.binary(max_size=200),
    st.integers(60_000, 200_000).map(lambda n: b'{"op":"wake","pad":"' + b"A" * n + b'"}'),  # over MAX_LINE
)
cases = st.one_of(objects, raw_lines).map(lambda line: line.replace(b"\n", b" ") + b"\n")
bursts = st.lists(cases, min_size=1, max_size=30)


class Process:
    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "doorphoned.camera.process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.next("hello")["version"] == protocol.VERSION
        # with the monitor stream on (any free port): its ops run for real under the fuzz
        self.send(protocol.encode({"op": "start", "source": url, "monitor": {"host": "127.0.0.1", "port": 0}}))
        self.next("connected")

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self, wanted: str) -> dict[str, Any]:
        while True:
            name, message = self.read()
            if name == wanted:
                return message

    def read(self) -> tuple[str, dict[str, Any]]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"camera process died (status {self.proc.poll()})"
        return protocol.decode(line, "ev")

    def answers(self) -> list[str]:
        """The op_error messages up to the sentinel's."""
        self.send(SENTINEL)
        errors = []
        while True:
            name, message = self.read()
            if name != "op_error":
                continue
            if "__sync__" in message["message"] and message["message"].startswith("unknown op '__sync__'"):
                return errors
            errors.append(message["message"])


@pytest.fixture
def camera_process(hwsim):
    process = Process(hwsim.info["camera"]["url"])
    yield process
    process.proc.kill()
    process.proc.wait()


def test_hostile_ops_are_answered_and_the_process_lives(camera_process, hwsim):
    relays = hwsim.relays()

    @settings(max_examples=fuzz_cases(300), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(bursts)
    def one(lines: list[bytes]) -> None:
        camera_process.send(b"".join(lines))
        errors = camera_process.answers()
        assert len(errors) <= len(lines)
        assert all(len(e) < 300 for e in errors)  # answers stay short whatever came in

    one()
    assert camera_process.proc.poll() is None
    # Still capturing and still taking good ops: a wake makes it publish full frames.
    camera_process.send(protocol.encode({"op": "wake", "seconds": 30}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = camera_process.next("stats")
        if stats["active"] and stats["published"] > 0:
            break
    else:
        raise AssertionError("no frames published after a wake")
    assert hwsim.relays() == relays  # nothing opened
    # the monitor stream ran under the fuzz and still answers (hostile ops left it serving)
    camera_process.send(protocol.encode({"op": "monitor.viewers", "req": 999_999}))
    while (reply := camera_process.next("reply"))["req"] != 999_999:
        pass
    assert reply["ok"] is True and reply["viewers"] == [] and reply["port"] > 0, reply


events = st.builds(lambda ev, extra: {"ev": ev, **extra},
                   st.sampled_from(["qr", "stats", "connected", "op_error", "hello", "nope", ""]) | hostile_text,
                   st.dictionaries(st.sampled_from(["texts", "age_ms", "frame_at", "sent_at", "frames", "message",
                                                    "capture", "active"]),
                                   values | st.lists(hostile_text, max_size=4), max_size=4)).map(_dumps)


@settings(max_examples=fuzz_cases(500), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(events, raw_lines))
def test_hostile_event_lines_never_break_the_daemon_side(line: bytes):
    bus, seen = EventBus(), []
    bus.subscribe(Event, seen.append, "test")
    feature = CameraFeature(CameraConfig(enabled=True, source="http://127.0.0.1:1/x"), bus, SystemClock())
    try:
        feature._event(line)
    except ConnectionError:
        assert protocol.decode(line, "ev")[0] == "error"  # the process reporting a lost camera
    for event in seen:
        assert isinstance(event, QrCodesInView | CameraStateChanged)
        if isinstance(event, QrCodesInView):
            assert all(isinstance(t, str) for t in event.texts)
            for stamp in (event.frame_at, event.sent_at):
                assert stamp is None or (isinstance(stamp, float) and math.isfinite(stamp))
    status = feature.status()
    json.dumps(status, allow_nan=False)  # whatever came in, status stays plain JSON
