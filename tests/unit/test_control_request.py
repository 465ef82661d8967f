"""Control-socket request parsing: strict JSON, one-line refusals."""

from __future__ import annotations

import json

import pytest

from doorphoned.control.server import RequestError, parse_request


@pytest.mark.parametrize("line, reason", [
    (b'{"cmd": "status", "cmd": "relay.open"}', "duplicate key 'cmd'"),
    (b'{"cmd": "relay.open", "args": {"door": 1, "door": 2}}', "duplicate key 'door'"),
    (b'{"cmd": "relay.open", "args": {"door": NaN}}', "NaN is not a finite number"),
    (b'{"cmd": "relay.open", "args": {"door": -Infinity}}', "-Infinity is not a finite number"),
    (b'{"cmd": "relay.open", "args": {"door": 1e999}}', "1e999 is not a finite number"),
    (b'{"cmd": "status", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 16 levels"),
    (b'{"cmd": "status", "args": ' + b'{"a": ' * 20 + b"1" + b"}" * 20 + b"}", "nested deeper than 16 levels"),
    (b'{"cmd": "status", "extra": 1}', "unknown field 'extra'"),
    (b'{"cmd": "user.add", "args": {"name": "a\\u0000b"}}', "contains a NUL character"),
    (b'{"cmd": "user.add", "args": {"name": "evil\\u202etxt"}}', "contains a bidi control"),
    (b'{"cmd": "user.add", "args": {"name": "\\ud800"}}', "lone surrogate"),
    (b'{"cmd": "status", "args": []}', "args must be an object"),
    (b'["status"]', 'expected {"cmd"'),
    (b"\xff\xfe", "not valid UTF-8"),
    (b"{'cmd': 'status'}", "malformed JSON"),
])
def test_hostile_requests_are_refused_with_one_line(line, reason):
    with pytest.raises(RequestError) as err:
        parse_request(line)
    assert reason in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_a_plain_request_passes():
    assert parse_request(json.dumps({"cmd": "relay.open", "args": {"door": 2}}).encode()) == {
        "cmd": "relay.open", "args": {"door": 2}}
    assert parse_request(b'{"cmd": "user.add", "args": {"name": "J\\u00fcrgen \\u05d0"}}')["args"]["name"] == "Jürgen א"
