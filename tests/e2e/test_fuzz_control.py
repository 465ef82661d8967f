"""Property fuzz of the control socket against one long-lived daemon (not a daemon per case).

Raw frames with the shapes that got through elsewhere: duplicate keys, NaN/Infinity tokens, deep
nesting, huge strings, NUL/bidi/lone surrogates, wrong types, unknown verbs and fields, garbage
bytes; then bursts on many connections and half-closed connections. Invariant: every frame is
answered with a one-line error (read-only verbs may succeed), nothing opens (hw-sim's relay history
is unchanged), nothing changes in the store, the daemon lives and logs no traceback.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any
from unittest.mock import MagicMock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.app.commands import build_registry
from doorphoned.control.server import MAX_REQUEST
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

# Every socket command the registry declares, the call commands aside (a call would ring someone).
_REGISTRY, _ = build_registry(MagicMock(), MagicMock(), MagicMock())
FIELDS = {name: command.fields for name in _REGISTRY.names("socket")
          if (command := _REGISTRY.get("socket", name)) is not None and name not in ("call", "hangup", "log.calls")}
VERBS = sorted(FIELDS)
# Verbs that read only, so random arguments may succeed and still change nothing.
READ_ONLY = ["status", "relay.list", "log.doors", "config.show", "cloud.status", "log.calls", "user.list",
             "user.show", "tempkey.list", "tempkey.show", "tempkey.qr", "access.check"]
ARG_NAMES = sorted({name for names in FIELDS.values() for name in names})

scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text,
                    st.sampled_from([1, 2, "1", "all", [1], "04A1B2C3", "12345678"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def dumps(value: Any) -> str:
    """JSON as a hostile client writes it: NaN/Infinity tokens kept, lone surrogates as \\ud800 escapes."""
    return json.dumps(value, allow_nan=True)


def obj(pairs: list[tuple[str, Any]]) -> str:
    """An object from pairs, keeping duplicate keys (json.dumps cannot write them)."""
    return "{" + ", ".join(f"{dumps(k)}: {v if isinstance(v, RawJson) else dumps(v)}" for k, v in pairs) + "}"


class RawJson(str):
    """Already JSON text (a NaN token, deep nesting)."""


def request(verb: str, args: list[tuple[str, Any]], extra: tuple[tuple[str, Any], ...] = ()) -> str:
    return obj([("cmd", verb), ("args", RawJson(obj(args))), *extra])


verbs = st.sampled_from(VERBS)
arg_pairs = st.lists(st.tuples(st.sampled_from(ARG_NAMES), values), max_size=4)

# Every one of these must be refused, whatever the verb (mutating ones included).
refused_frames = st.one_of(
    # duplicate keys, at the top and inside args
    st.builds(lambda v, a, k: request(v, [*a, (k, 1), (k, 2)]), verbs, arg_pairs, st.sampled_from(ARG_NAMES)),
    st.builds(lambda v: obj([("cmd", "status"), ("cmd", v)]), verbs),
    # non-finite numbers as JSON tokens and as overflowing literals
    st.builds(lambda v, a, k, t: request(v, [*a, (k, RawJson(t))]), verbs, arg_pairs, st.sampled_from(ARG_NAMES),
              st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])),
    # deep nesting, under and over the size limit
    st.builds(lambda v, n, o: request(v, [("door", RawJson(o[0] * n + "1" + o[1] * n))]), verbs,
              st.integers(17, 30_000), st.sampled_from([("[", "]"), ('{"a": ', "}")])),
    # control, bidi, surrogate text in any argument or key
    st.builds(lambda v, a, c: request(v, [*a, ("name", "x" + c)]), verbs, arg_pairs,
              st.sampled_from(["\x00", "\u202e", "\ud800", "\x1b", "\n", "\u2066", "\x7f"])),
    st.builds(lambda v, c: request(v, [("evil" + c, 1)]), verbs, st.sampled_from(["\x00", "\u202e", "\udfff"])),
    # unknown verbs, unknown top-level fields, unknown arguments
    st.builds(request, (st.text(max_size=30) | hostile_text).filter(lambda v: v not in FIELDS),
              arg_pairs),
    st.builds(lambda v, a, k: request(v, a, ((k, 1),)), verbs, arg_pairs,
              st.text(min_size=1, max_size=10).filter(lambda k: k not in ("cmd", "args"))),
    st.builds(lambda v, a, k, x: request(v, [*a, (k, x)]), verbs, arg_pairs,
              st.text(min_size=1, max_size=12).filter(lambda k: k not in ARG_NAMES), values),
    # wrong types where the frame's shape is fixed
    st.builds(lambda v, x: obj([("cmd", v), ("args", x)]), verbs,
              st.one_of(st.lists(values, max_size=2), st.text(max_size=5), hostile_numbers, st.booleans())),
    st.builds(lambda x: obj([("cmd", x)]), st.one_of(st.integers(), st.none(), st.lists(st.text(), max_size=2))),
    st.builds(dumps, st.one_of(st.lists(values, max_size=3), st.text(max_size=20), hostile_numbers)),
    # huge strings in an unknown argument (some over the 64 KiB line limit)
    st.builds(lambda v, n: request(v, [("zz_huge", "A" * n)]), verbs, st.integers(1000, 80_000)),
    # not JSON at all, or not UTF-8
    st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" not in b).map(lambda b: b.decode("latin-1")),
    st.binary(min_size=1, max_size=50).filter(lambda b: b"\n" not in b).map(lambda b: "\udcff" + b.hex()),
)
read_only_frames = st.builds(request, st.sampled_from(READ_ONLY),
                             st.lists(st.tuples(st.sampled_from(ARG_NAMES), values), max_size=3,
                                      unique_by=lambda p: p[0]))
frames = st.one_of(refused_frames.map(lambda f: (f, True)), refused_frames.map(lambda f: (f, True)),
                   read_only_frames.map(lambda f: (f, False)))


def encode(frame: str) -> bytes:
    """The frame as bytes on the wire; a lone surrogate becomes invalid UTF-8, as a hostile client sends."""
    return frame.encode("utf-8", "surrogateescape" if "\udcff" in frame else "surrogatepass")


class Conn:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def ask(self, data: bytes) -> dict[str, Any]:
        # An over-long line: the server may answer and close while the rest is still being sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data + b"\n")
        line = self.file.readline()
        assert line.endswith(b"\n") and line.count(b"\n") == 1, line[:200]
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def snapshot(d, hwsim) -> dict[str, Any]:
    """What must not change: relays, users, keys, settings, log level, door and call logs."""
    return {"relays": [(r["relay"], r["energise_count"], r["energised"]) for r in hwsim.relays()],
            "users": d.ctl_json("user", "list"), "keys": d.ctl_json("tempkey", "list"),
            "settings": d.ctl_json("config", "show")["settings"], "level": d.ctl_json("log", "level"),
            "door_log": len(d.door_log()), "calls": d.ctl_json("log", "calls")}


def test_control_socket_fuzz_one_daemon(daemon, hwsim):
    d = daemon
    d.ctl("user", "add", "Fuzz Target", "--id", "u-fuzz", "--doors", "1")  # something to aim at
    d.ctl("pin", "set", "u-fuzz", input="2580\n")
    d.ctl("card", "add", "u-fuzz", "04A1B2C3")
    before = snapshot(d, hwsim)
    conn = Conn(str(d.socket))
    counts = {"refused": 0, "read_ok": 0}

    @settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames)
    def fuzz(case):
        frame, must_refuse = case
        nonlocal conn
        data = encode(frame)
        if len(data) >= MAX_REQUEST - 64:  # at or over the line limit, where the server closes: its own connection
            big = Conn(str(d.socket))
            reply = big.ask(data)
            big.close()
            assert not reply["ok"] and "\n" not in reply["error"], reply
            counts["refused"] += 1
            return
        reply = conn.ask(data)
        error = reply.get("error", "")
        assert "internal error" not in error, (frame[:300], reply)
        if not reply["ok"]:
            assert error and "\n" not in error and len(error) < 400, reply
            counts["refused"] += 1
        else:
            assert not must_refuse, (frame[:300], reply)
            counts["read_ok"] += 1

    fuzz()
    conn.close()
    assert counts["refused"] > counts["read_ok"]
    assert snapshot(d, hwsim) == before
    assert d.ctl_json("status")["pid"] == d.proc.pid
    assert "Traceback" not in d.log_text() and "internal error" not in d.log_text()


def test_bursts_on_many_connections_and_half_closed_ones(daemon, hwsim):
    """Thousands of hostile requests pipelined on 16 connections at once: each answered, in order."""
    d = daemon
    before = snapshot(d, hwsim)
    frames = [encode(f) for f in (
        '{"cmd": "relay.open", "args": {"door": 1, "door": 2}}', '{"cmd": "relay.open", "args": {"door": NaN}}',
        '{"cmd": "relay.open", "args": {"door": 1}, "x": 1}', '{"cmd": "relay.open", "args": {"dor": 1}}',
        '{"cmd": "user.add", "args": {"name": "a\\u202eb"}}', '{"cmd": "pin.set", "args": ' + "[" * 5000 + "]" * 5000
        + "}", '{"cmd": "nope"}', "\x00\x01garbage", '{"cmd": "tempkey.create", "args": {"name": "\\ud800"}}')]
    per_connection = fuzz_cases(300) // 16 + 20
    errors: list[str] = []

    def client(n: int) -> None:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(120)
                sock.connect(str(d.socket))
                batch = [frames[(n + i) % len(frames)] for i in range(per_connection)]
                sender = threading.Thread(target=lambda: sock.sendall(b"\n".join(batch) + b"\n"))
                sender.start()
                replies = _read_replies(sock, per_connection)
                sender.join()
                if len(replies) != per_connection or any(r["ok"] for r in replies):
                    accepted = [r for r in replies if r["ok"]][:1]
                    errors.append(f"connection {n}: {len(replies)} replies of {per_connection}; accepted: {accepted}")
        except Exception as exc:  # collected: an assertion in a thread would be lost
            errors.append(f"connection {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    # Half-closed: the request is answered after the client shut its sending side, then the server closes.
    for data in (frames[0], b'{"cmd": "status"}', b'{"cmd": "relay.op'):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(d.socket))
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            lines = sock.makefile("rb").read().splitlines()
            assert len(lines) == 1 and json.loads(lines[0])["ok"] == (data == b'{"cmd": "status"}'), lines
    # Connections opened and dropped mid-request.
    for _ in range(50):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(d.socket))
            sock.sendall(b'{"cmd": "relay.open", "args": {"door": 1}')
    assert snapshot(d, hwsim) == before
    assert d.ctl_json("status")["pid"] == d.proc.pid
    assert "Traceback" not in d.log_text()


def _read_replies(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    replies = []
    with sock.makefile("rb") as file:
        for _ in range(count):
            line = file.readline()
            if not line:
                break
            replies.append(json.loads(line))
    return replies
