"""Raw SIP fuzz over UDP and TCP against one long-lived daemon (hypothesis).

Malformed start lines and headers, bad Content-Length, NULs, huge headers, bidi controls, lone
surrogates, NaN/Infinity tokens, deep nesting, duplicate headers, unknown methods and schemes, in and
out of an established call, and bursts. Invariant: nothing opens (hw-sim's relays and the door log are
unchanged), the daemon is the same process, its SIP process is never restarted, the keypad still opens
a door afterwards, and a well-formed out-of-dialog request that RFC 3261 says must be answered (OPTIONS,
an INVITE from a refused address, REGISTER/NOTIFY/PUBLISH/INFO and unknown methods) gets one, and a
well-formed request with a header that may appear once given twice gets exactly 400. TCP connections are
also opened and held (up to 300 at once) while the fuzz runs: the connection bounds must keep the SIP
process alive and answering.

``SIP_FUZZ_EXAMPLES`` sets the number of cases: a fast pass in ``make test``, 10,000 in ``make fuzz-sip``.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.latency import KeypadProbe
from tests.procs import wait_for
from tests.sipburst import SDP, header, message
from tests.sipp import sip_env, wait_sip_up

EXAMPLES = int(os.environ.get("SIP_FUZZ_EXAMPLES", "300"))
STRANGER = "127.0.0.2"  # a refused address: INVITEs from it never become calls
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "NOTIFY", "PUBLISH", "INFO", "SUBSCRIBE",
           "MESSAGE", "PRACK", "UPDATE", "REFER", "FOO", "invite", "INVITE\x00", "ÏNVITE", ""]
ANSWERED = ["OPTIONS", "INVITE", "REGISTER", "NOTIFY", "PUBLISH", "INFO", "FROBNICATE", "MESSAGE", "SUBSCRIBE",
            "UPDATE", "BYE"]  # out of dialog
ONCE = ["From", "f", "To", "t", "Call-ID", "i", "CSeq", "Max-Forwards", "Content-Length", "l"]
CSEQ = st.integers(1, 2**31 - 1)  # RFC 3261 §8.1.1.5: below 2**31
SCHEMES = ["sip", "sips", "tel", "http", "mailto", "", "SIP", "sip\u202e", "x" * 300]
HEADERS = ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Type", "Content-Length",
           "Route", "Record-Route", "Expires", "Event", "Subscription-State", "Replaces", "Refer-To", "v", "f",
           "t", "i", "l", "X-Junk"]
HOSTILE = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e999", "-1", "99999999999999999999", "\x00", "\u202e", "\ud800",
    "\udfff", "<" * 5000, "[" * 3000, "a" * 70000, '"' * 1000, ";" * 2000, "\r\n", "\r\n ", " ",
    '{"a": {"a": {"a": 1}}}', "sip:" + "@" * 500, "0x7fffffff", "\t", "é" * 1000])
TEXT = st.one_of(HOSTILE, st.text(max_size=200), st.text(alphabet=st.characters(codec="utf-8"), max_size=50))


def _legal(text: str) -> str:
    """``text`` cut down to what a SIP header value may hold, so the request stays well-formed."""
    return "".join(c for c in text if (c >= " " or c == "\t") and c != "\x7f" and not "\ud800" <= c <= "\udfff")[:1000]


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates go out as the bytes they would be


@st.composite
def sip_request(draw, dialog: dict[str, str], local: str, target: str) -> tuple[bytes, str, int]:
    """(datagram, method, the answer RFC 3261 requires as sent: 0 none, 1 any final answer, else that code)."""
    kind = draw(st.integers(0, 10))
    if kind == 0:  # not SIP at all
        return draw(st.binary(max_size=3000)), "", 0
    expected = kind <= 3  # a well-formed request that must be answered, with hostile values where allowed
    method = draw(st.sampled_from(ANSWERED if expected else METHODS))
    scheme = "sip" if expected else draw(st.sampled_from(SCHEMES))
    in_dialog = not expected and draw(st.booleans()) and dialog
    call_id = dialog["call_id"] if in_dialog else uuid.uuid4().hex
    from_tag = dialog["from_tag"] if in_dialog else "f" + uuid.uuid4().hex[:8]
    to = f"<sip:door@{target}>" + (f";tag={dialog['to_tag']}" if in_dialog else "")
    well_formed = expected or draw(st.integers(0, 3)) == 0
    body = draw(st.sampled_from(["", SDP.format(ip="127.0.0.1", port=40000)])) if well_formed else draw(TEXT)
    cseq_method = method if expected or draw(st.integers(0, 5)) else draw(st.sampled_from(METHODS))
    lines = [f"{method} {scheme}:door@{target} SIP/2.0" if expected or draw(st.integers(0, 5)) else draw(TEXT),
             f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK{uuid.uuid4().hex}",
             f"From: <sip:fuzz@{local}>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: {draw(CSEQ if expected else st.integers(0, 2**40))} {cseq_method}",
             f"Contact: <sip:fuzz@{local}>", "Max-Forwards: 70"]
    twice = draw(st.sampled_from(ONCE)) if kind == 3 else ""  # a header that may appear once, twice: 400
    if twice and twice not in ("Content-Length", "l"):  # each second value parses (pjsip drops what does not)
        word = "".join(c for c in _legal(draw(TEXT)) if c.isalnum() and c.isascii())[:20] or "admin"
        value = {"From": f"<sip:{word}@127.0.0.1>;tag=dup", "f": f"<sip:{word}@127.0.0.1>;tag=dup",
                 "To": f"<sip:{word}@{target}>", "t": f"<sip:{word}@{target}>",
                 "Call-ID": _legal(draw(TEXT)).strip() or "dup", "i": _legal(draw(TEXT)).strip() or "dup",
                 "CSeq": f"{draw(CSEQ)} {method}", "Max-Forwards": str(draw(st.integers(0, 255)))}[twice]
        lines.insert(draw(st.integers(1, len(lines))), f"{twice}: {value}")
    if expected and draw(st.booleans()):  # hostile text where RFC 3261 allows any (TEXT-UTF8: no controls,
        # no NUL, valid UTF-8) and short enough for one datagram: bidi controls, quotes, brackets, NaN tokens
        lines.insert(3, f"Subject: {_legal(draw(TEXT))}")
    if not well_formed:
        for _ in range(draw(st.integers(0, 4))):  # mangle, duplicate or add headers
            index = draw(st.integers(0, len(lines)))
            lines.insert(index, f"{draw(st.sampled_from(HEADERS))}{draw(st.sampled_from([': ', ':', ' : ', '']))}"
                                f"{draw(TEXT)}")
        if draw(st.booleans()):
            del lines[draw(st.integers(1, len(lines) - 1))]
    raw_body = _encode(body)
    length = str(len(raw_body)) if well_formed or draw(st.booleans()) else draw(TEXT)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {length}")
    if twice in ("Content-Length", "l"):
        lines.insert(draw(st.integers(1, len(lines))), f"{twice}: {length}")
    data = _encode("\r\n".join(lines) + "\r\n\r\n") + raw_body
    return data, method, (400 if twice else 1) if expected else 0


def _answers(sock: socket.socket, call_id: str, seconds: float) -> list[bytes]:
    deadline, out = time.monotonic() + seconds, []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            break
        if call_id.encode() in data:
            out.append(data)
            if int(data[8:11] or b"0") >= 200:
                break
    return out


def _establish(target: str) -> tuple[socket.socket, dict[str, str]]:
    """A call from the allowed address that stays up for the whole fuzz (no RTP timeout, long max time)."""
    host, port = target.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    local = f"127.0.0.1:{sock.getsockname()[1]}"
    call_id = uuid.uuid4().hex
    sock.sendto(message("INVITE", target, local, call_id, 1, uuid.uuid4().hex,
                        body=SDP.format(ip="127.0.0.1", port=40000)), (host, int(port)))
    ok = next(d for d in _answers(sock, call_id, 10) if d.startswith(b"SIP/2.0 200"))
    to_tag = header(ok, "to").partition("tag=")[2].split(";")[0]
    sock.sendto(message("ACK", target, local, call_id, 1, uuid.uuid4().hex, to_tag), (host, int(port)))
    return sock, {"call_id": call_id, "from_tag": f"f{call_id[:10]}", "to_tag": to_tag, "local": local}


def test_raw_sip_fuzz_opens_nothing_and_kills_nothing(daemon_factory, hwsim):
    d = daemon_factory(env=sip_env(DOORPHONED_SIP_RTP_TIMEOUT="0", DOORPHONED_SIP_MAX_CALL_TIME="7200",
                                   DOORPHONED_DOORS_1_MODE="bistable"))
    d.start()
    wait_sip_up(d)
    target = f"127.0.0.1:{d.extra_env['DOORPHONED_SIP_PORT']}"
    host, port = target.rsplit(":", 1)
    pid = d.proc.pid
    sip = next(f["sip"] for f in d.ctl_json("status")["features"] if "sip" in f)
    sip_pid, relays_before = sip["pid"], [hwsim.relay(r)["energise_count"] for r in (1, 2)]
    call_sock, dialog = _establish(target)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((STRANGER, 0))
    local = f"{STRANGER}:{udp.getsockname()[1]}"
    stats = {"sent": 0, "answered": 0, "tcp": 0, "held": 0, "400": 0}
    held: list[socket.socket] = []

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(sip_request(dialog, local, target), st.sampled_from(["udp"] * 4 + ["tcp", "in-call", "hold"]),
           st.integers(1, 30))
    def fuzz(request: tuple[bytes, str, int], transport: str, burst: int) -> None:
        data, method, needs_answer = request
        if transport == "hold":  # connections opened and held, from strangers' addresses, some sending junk
            for _ in range(burst if len(held) < 300 else 0):
                client = socket.socket()
                client.bind((f"127.0.2.{len(held) % 50 + 1}", 0))
                client.setblocking(False)
                client.connect_ex((host, int(port)))
                held.append(client)
            stats["held"] = len(held)
        elif transport == "tcp":
            stats["tcp"] += 1
            with socket.create_connection((host, int(port)), timeout=2) as tcp:
                tcp.sendall(data[:200_000])
        elif transport == "in-call":  # from the call's own address, where in-dialog requests belong
            call_sock.sendto(data[:65_000], (host, int(port)))
        else:
            repeats = burst if burst > 25 else 1  # now and then a burst of the same datagram
            for _ in range(repeats):
                udp.sendto(data[:65_000], (host, int(port)))
        stats["sent"] += 1
        if needs_answer and transport == "udp":
            # matched on the Via branch: with two Call-IDs the answer carries the one pjsip's parser kept
            call_id = re.search(rb"branch=(z9hG4bK[0-9a-f]+)", data).group(1).decode()  # type: ignore[union-attr]
            answers = _answers(udp, call_id, 0.5)
            for _ in range(20):  # retransmitted like a UAC would (timer A): a burst may have filled the buffer
                if any(int(a[8:11]) >= 200 for a in answers):
                    break
                udp.sendto(data, (host, int(port)))
                answers = _answers(udp, call_id, 0.5)
            assert any(int(a[8:11]) >= 200 for a in answers), (method, data[:300])
            final = next(int(a[8:11]) for a in answers if int(a[8:11]) >= 200)
            assert needs_answer == 1 or final == needs_answer, (final, method, data[:300])
            stats["answered"] += 1
            stats["400"] += final == 400
        if stats["sent"] % 100 == 0:
            assert d.proc.poll() is None, "the daemon died"

    fuzz()
    udp.close()
    for client in held:
        client.close()
    assert d.proc.poll() is None and d.proc.pid == pid
    sip = wait_for(lambda: (s := next(f["sip"] for f in d.ctl_json("status")["features"] if "sip" in f))["running"]
                   and s, timeout=20, what="SIP running after the fuzz")
    assert sip["restarts"] == 0 and sip["pid"] == sip_pid, sip
    assert [hwsim.relay(r)["energise_count"] for r in (1, 2)] == relays_before  # nothing opened
    assert d.door_log(kind="access") == []
    assert stats["sent"] >= EXAMPLES and stats["answered"] > 0 and stats["tcp"] > 0 and stats["held"] > 0, stats
    assert stats["400"] > 0, stats
    print(f"SIP fuzz: {stats}")
    call_sock.close()
    user = d.ctl_json("user", "add", "After fuzz", "--doors", "1")  # readers still work
    d.ctl("pin", "set", user["id"], input="7351\n")
    probe = KeypadProbe(hwsim.socket, "7351")
    probe.once()
    probe.close()
