"""hw-sim's own command line and socket under bad input: clear errors, non-zero exits, hw-sim keeps running."""

from __future__ import annotations

import json

import pytest

HUGE = "x" * 100_000


def _request(hwsim, payload: bytes) -> dict:
    control, replies = hwsim.control()
    with control:
        control.sendall(payload)
        return json.loads(replies.readline())


@pytest.mark.parametrize("args", [
    ("camera", "qr", HUGE),
    ("camera", "qr", "y" * 2001),
    ("keypad", "1" * 5000),
    ("nfc", "tap", "0" * 10_000),
    ("nfc", "tap", "zz"),
    ("camera", "show", "/nonexistent/picture.jpg"),
    ("door", "open", "99"),
])
def test_bad_arguments_fail_with_one_line_and_hwsim_lives(hwsim, args):
    result = hwsim.cmd(*args, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("hwsim: ") and result.stderr.count("\n") == 1, result.stderr
    assert hwsim.proc.poll() is None
    assert hwsim.cmd("info", "--json").returncode == 0


def test_socket_requests_over_the_limit_binary_or_of_wrong_type_are_answered_with_errors(hwsim):
    reply = _request(hwsim, json.dumps({"op": "camera", "action": "qr", "text": HUGE}).encode() + b"\n")
    assert reply == {"ok": False, "error": "request longer than 65536 bytes"}
    for request in ({"op": "camera", "action": "qr", "text": "\ud800"},
                    {"op": "camera", "action": "qr", "text": ["list"]},
                    {"op": "nfc_tap", "uid": "04\u0000A1B2C3"},
                    {"op": "door", "door": "one", "open": True}):
        reply = _request(hwsim, json.dumps(request).encode() + b"\n")
        assert reply["ok"] is False and reply["error"], request
    assert _request(hwsim, b"\xff\xfe\x00garbage\n")["ok"] is False
    assert _request(hwsim, json.dumps({"op": "keypad", "keys": "\u0000\u00ff#"}).encode() + b"\n") == {"ok": True}
    assert hwsim.proc.poll() is None
    assert json.loads(hwsim.cmd("info", "--json").stdout)["camera"]["on"] is True
    # The fixtures read relays over the socket (a process per poll was too dear); the command prints the same.
    assert json.loads(hwsim.cmd("relays", "--json").stdout) == hwsim.relays() != []
    assert hwsim.cmd("relays").stdout.startswith("relay 1 (GPIO")
