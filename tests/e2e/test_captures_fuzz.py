"""Property fuzz of the capture commands on the control socket, in one long-lived daemon with captures on:
hostile ``capture`` / ``log.captures`` frames (NaN/Infinity tokens, duplicate keys, deep nesting, huge
strings, NUL, bidi controls, lone surrogates, wrong types, unknown fields) are answered with an error,
nothing is captured, no relay moves, and the daemon lives. `make fuzz-captures` runs 10,000 cases."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.test_captures import ENV, _camera_up
from tests.e2e.test_fuzz_control import Conn, RawJson, encode, obj, values
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

# Any door value but a valid one (a valid door, or none, would take a capture: that is not an attack).
bad_doors = st.one_of(hostile_numbers.filter(lambda v: not (isinstance(v, int) and 1 <= v <= 16)), hostile_text,
                      st.booleans(), st.lists(st.integers(1, 16), min_size=1, max_size=3),
                      st.sampled_from([0, 17, -1, 2**63, "1", "1\u202e", [1], {"door": 1}]))
capture_frames = st.one_of(
    st.builds(lambda d: obj([("cmd", "capture"), ("args", RawJson(obj([("door", d)])))]), bad_doors),
    st.builds(lambda t: obj([("cmd", "capture"), ("args", RawJson('{"door": ' + t + "}"))]),
              st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "1.5", "true", "null, \"door\": null"])),
    st.builds(lambda n: obj([("cmd", "capture"), ("args", RawJson('{"door": ' + "[" * n + "1" + "]" * n + "}"))]),
              st.integers(1, 20_000)),
    st.builds(lambda k, v: obj([("cmd", "capture"), ("args", RawJson(obj([("door", 1), (k, v)])))]),
              st.sampled_from(["path", "trigger", "log_id", "file", "door\x00", "door\u202e"]), values),
    st.builds(lambda a, b: obj([("cmd", "capture"), ("args", RawJson(obj([("door", a), ("door", b)])))]),
              st.integers(1, 16), st.integers(1, 16)),
    st.builds(lambda t: obj([("cmd", "log.captures"), ("args", RawJson(obj([("trigger", t)])))]),
              hostile_text.filter(lambda t: t not in ("manual", "call", "granted", "refused", "forced_open",
                                                      "motion", "package"))),
    st.builds(lambda n: obj([("cmd", "log.captures"), ("args", RawJson(obj([("limit", n)])))]),
              hostile_numbers.filter(lambda v: not (isinstance(v, int) and 1 <= v <= 100_000))),
)


def test_capture_commands_fuzz_one_daemon(daemon_factory, hwsim):
    d = daemon_factory(env=ENV)
    d.start()
    _camera_up(d)
    relays = [(r["relay"], r["energise_count"]) for r in hwsim.relays()]
    conn = Conn(str(d.socket))
    refused = 0

    @settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=list(HealthCheck))
    @given(capture_frames)
    def fuzz(frame):
        nonlocal conn, refused
        data = encode(frame)
        if len(data) > 60_000:
            big = Conn(str(d.socket))
            reply = big.ask(data)
            big.close()
        else:
            reply = conn.ask(data)
        assert reply["ok"] is False and reply["error"] and "\n" not in reply["error"], (frame[:200], reply)
        assert "internal error" not in reply["error"]
        refused += 1

    fuzz()
    conn.close()
    assert refused >= fuzz_cases(300) * 0.9
    assert d.ctl_json("log", "captures") == [] and os.listdir(d.state_dir / "captures") == []
    assert [(r["relay"], r["energise_count"]) for r in hwsim.relays()] == relays
    assert d.ctl_json("status")["pid"] == d.proc.pid and "Traceback" not in d.log_text()
