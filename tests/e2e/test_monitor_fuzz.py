"""Hostile RTSP into one long-lived monitor server: hypothesis over raw TCP, then a flood of connections.

Invariants after the cases: the server lives, no viewer was admitted, the grant issued before the fuzz
is still unspent (its user name was in many hostile Authorization headers), and a real viewer still
decodes stamped frames. ``make fuzz-monitor`` runs 10,000 cases; ``make test`` a fast pass.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz import HOSTILE_CHARS, fuzz_cases, hostile_numbers, hostile_text
from tests.procs import wait_for
from tests.rtsp import PATH, MonitorHost, RawRtsp, open_viewer, read_stamps

METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER",
           "ANNOUNCE", "RECORD", "REDIRECT", "GET", "POST", "X" * 300, ""]
GRANT_USER = "s-000000000000"  # replaced by the live grant's user name in the fixture


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


numbers = st.one_of(st.sampled_from(["NaN", "Infinity", "-1", "0", "1e999", "18446744073709551616", "0x10",
                                     "", " ", "1 2", "99999999999999999999999999999"]),
                    st.integers(-(2**70), 2**70).map(str), hostile_text)
header_names = st.sampled_from(["CSeq", "Content-Length", "Session", "Transport", "Range", "Authorization",
                                "Accept", "Require", "x-Dup", "Scale", "Speed", "Blocksize", "Content-Type"])


@st.composite
def authorizations(draw: st.DrawFn) -> str:
    user = draw(st.sampled_from([GRANT_USER, "installer", "", '"', "a" * 5000]) | hostile_text)
    nonce = draw(st.sampled_from(["", "0", "x" * 3000]) | hostile_text)
    scheme = draw(st.sampled_from(["Digest", "Basic", "digest", "", "Digest Digest"]))
    return f'{scheme} username="{user}", realm="GStreamer RTSP Server", nonce="{nonce}", uri="x", response="0"'


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request-shaped message: a real or wild method, hostile URI and headers, odd lengths."""
    method = draw(st.sampled_from(METHODS) | hostile_text)
    uri = draw(st.sampled_from([f"rtsp://127.0.0.1{PATH}", "*", f"rtsp://127.0.0.1{PATH}/stream=0", "/" * 9000,
                                "rtsp://[::1", "rtsp://x:99999999/"]) | hostile_text)
    version = draw(st.sampled_from(["RTSP/1.0", "RTSP/2.0", "HTTP/1.1", "RTSP/1.0\x00", ""]))
    headers = [f"CSeq: {draw(numbers)}"]
    for _ in range(draw(st.integers(0, 6))):
        value = draw(numbers | hostile_text | authorizations() | st.integers(1, 70_000).map(lambda n: "H" * n))
        headers.append(f"{draw(header_names)}: {value}")
    if draw(st.booleans()):
        headers.append("Authorization: " + draw(authorizations()))
    body = draw(st.sampled_from(["", '{"a": NaN, "a": 1}', "[" * 5000, "\x00" * 10, "\u202e"]) | hostile_text)
    message = f"{method} {uri} {version}\r\n" + "\r\n".join(headers) + "\r\n\r\n" + body
    return _bytes(message)


garbage = st.one_of(st.binary(max_size=2000),
                    st.lists(st.sampled_from(HOSTILE_CHARS)).map(lambda c: _bytes("".join(c))),
                    st.just(b"$\x00\xff\xff" + b"\x80" * 100), st.just(b"\r\n" * 5000))
messages = st.one_of(requests(), garbage,
                     st.lists(requests(), min_size=2, max_size=30).map(b"".join))  # pipelined bursts


json_values = st.recursive(st.none() | st.booleans() | hostile_numbers | hostile_text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
                           max_leaves=10)


@st.composite
def control_lines(draw: st.DrawFn) -> bytes:
    """A control request: a known op with hostile fields, raw hostile JSON, or bytes that are not UTF-8."""
    op = draw(st.sampled_from(["issue_session", "revoke", "viewers", "status"]) | hostile_text)
    fields = draw(st.dictionaries(st.sampled_from(["purpose", "cap_seconds", "id", "op"]) | hostile_text,
                                  json_values, max_size=4))
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return json.dumps({"op": op, **fields}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if shape == 1:  # NaN / Infinity tokens and duplicate keys, as JSON text
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0"]))
        return f'{{"op": "issue_session", "purpose": "cloud", "cap_seconds": {token}, "op": "revoke"}}'.encode()
    if shape == 2:  # deep nesting
        depth = draw(st.integers(100, 20_000))
        return b'{"op": "status", "x": ' + b"[" * depth + b"]" * depth + b"}"
    if shape == 3:
        return draw(st.binary(max_size=300)).replace(b"\n", b" ")
    if shape == 4:
        return _bytes(draw(hostile_text)).replace(b"\n", b" ")
    return json.dumps({"op": op, **fields}).encode() * draw(st.integers(2, 50))  # a burst on one line


@pytest.fixture(scope="module")
def fuzz_host(tmp_path_factory):
    host = MonitorHost(tmp_path_factory.mktemp("monitor-fuzz"), "--max-viewers", "2", "--grant-ttl", "86400",
                       "--setup-seconds", "5")
    host.start()
    grant = host.request("issue_session", purpose="fuzz", cap_seconds=600)["grant"]
    yield host, grant
    host.stop()


def send(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload``, half-close, read what the server says until it closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:  # the server hung up first (reset, not connected): what garbage deserves
            return b""
    return reply


def well_formed_options(payload: bytes) -> bool:
    """An OPTIONS request any RTSP server must answer: RTSP/1.0, one complete header block, no body."""
    head, sep, rest = payload.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0]
    return (bool(sep) and not rest and first.startswith(b"OPTIONS rtsp://127.0.0.1") and first.endswith(b" RTSP/1.0")
            and b"content-length" not in head.lower() and b"\x00" not in head and len(payload) < 4000)


def check_invariants(host: MonitorHost, grant: dict[str, str]) -> None:
    assert host.alive(), host.log.read_text()[-3000:]
    wait_for(lambda: host.request("viewers")["viewers"] == [], timeout=30, what="the real viewers gone")
    log = host.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert grant["password"] not in log


def test_hostile_rtsp_requests_change_nothing(fuzz_host):
    host, grant = fuzz_host
    cases = fuzz_cases(200)
    answered = {"requests": 0, "replies": 0}
    unanswered: list[bytes] = []

    @settings(max_examples=cases, database=None)
    @given(messages)
    def one(payload: bytes) -> None:
        payload = payload.replace(_bytes(GRANT_USER), _bytes(grant["user"]))
        reply = send(host.port, payload)
        if well_formed_options(payload):
            answered["requests"] += 1
            if reply.startswith(b"RTSP/1.0 "):
                answered["replies"] += 1
            else:
                unanswered.append(payload[:300])
        assert b"m=video" not in reply  # nothing described without a valid digest

    one()
    check_invariants(host, grant)
    assert answered["replies"] == answered["requests"], (answered, unanswered)
    assert_real_viewer_gets_frames(host)


def test_a_flood_of_connections_does_not_stop_the_stream(fuzz_host):
    host, grant = fuzz_host
    flood = []
    started = time.monotonic()
    for i in range(400):
        sock = socket.create_connection(("127.0.0.1", host.port), timeout=30)
        if i % 3 == 0:
            sock.sendall(b"DESCRIBE rtsp://127.0.0.1" + PATH.encode() + b" RTSP/1.0\r\nCSeq: 1\r\n")  # never ends
        elif i % 3 == 1:
            sock.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        flood.append(sock)
    print(f"400 connections opened in {time.monotonic() - started:.1f} s")
    assert_real_viewer_gets_frames(host)  # while 400 connections hang on
    assert time.monotonic() - started < 60, "connections were refused or stalled (listen backlog)"
    for sock in flood:  # the server closes connections that set up nothing (--setup-seconds)
        assert RawRtsp.closed_socket_within(sock, 60)
        sock.close()
    check_invariants(host, grant)
    viewer = RawRtsp.from_url(grant["url"])  # the grant survived everything and still works, once
    assert viewer.play() == 200
    viewer.close()


def assert_real_viewer_gets_frames(host: MonitorHost) -> None:
    deadline = time.monotonic() + 120
    while True:
        capture = open_viewer(host.url())
        try:
            stamps = [v for v, _ in read_stamps(capture, 10) if v is not None]
        finally:
            capture.release()
        if len(stamps) >= 5 or time.monotonic() > deadline:
            break
    assert len(stamps) >= 5, host.log.read_text()[-2000:]


def test_hostile_control_lines_are_answered_and_change_nothing(fuzz_host):
    host, grant = fuzz_host
    issued: list[str] = []

    @settings(max_examples=fuzz_cases(150), database=None)
    @given(st.lists(control_lines(), min_size=1, max_size=5))
    def one(lines: list[bytes]) -> None:
        for line in lines:
            reply = host.raw(line)
            assert isinstance(reply.get("ok"), bool), reply
            if reply["ok"] and "grant" in reply:
                issued.append(reply["grant"]["id"])
            if not reply["ok"]:
                assert isinstance(reply["error"], str) and reply["error"]

    one()
    for grant_id in issued:  # a valid request now and then is fine; it must be a real, revocable grant
        assert host.request("revoke", id=grant_id) == {"ok": True}
    check_invariants(host, grant)
