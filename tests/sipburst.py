"""A burst of INVITEs over UDP, sent back to back from one address, with the answers counted by code.

A small UAC of its own (not sipp) because what is measured is the answers: every INVITE is sent at
once, retransmitted on RFC 3261's timer A until it gets any response, ACKed when refused, ACKed and
ended with BYE when answered 200; the result counts final responses by status code.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

SO_RCVBUFFORCE = 33
SDP = ("v=0\r\no=burst 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def message(method: str, target: str, local: str, call_id: str, cseq: int, branch: str, to_tag: str = "",
            body: str = "", cseq_method: str = "") -> bytes:
    """A minimal RFC 3261 request from ``local`` (host:port) to ``target`` (host:port)."""
    to = f"<sip:door@{target}>" + (f";tag={to_tag}" if to_tag else "")
    kind = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:door@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK{branch}\r\n"
            f"From: <sip:burst@{local}>;tag=f{call_id[:10]}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {cseq_method or method}\r\nContact: <sip:burst@{local}>\r\nMax-Forwards: 70\r\n{kind}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()


def header(data: bytes, name: str) -> str:
    for line in data.decode(errors="replace").split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


@dataclass
class _Invite:
    call_id: str
    branch: str
    data: bytes
    sent: float
    interval: float = 0.5
    provisional: bool = False
    final: int = 0
    bye: bytes = b""  # sent (and resent) until answered: a burst can overflow the unit's receive buffer
    bye_sent: float = 0.0
    ended: bool = True


@dataclass
class BurstResult:
    codes: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.codes.items()))
        return f"{codes}; unanswered: {self.unanswered}; {self.seconds:.1f} s"


def burst(target: str, count: int, source_ip: str = "127.0.0.1", sdp: bool = True, timeout: float = 40.0,
          rtp_port: int = 40000) -> BurstResult:
    """Send ``count`` INVITEs to ``target`` (host:port) back to back and wait for every final answer."""
    host, port = target.rsplit(":", 1)
    dest = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    with contextlib.suppress(OSError):  # as root, past net.core.rmem_max: the burst's answers all fit
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind((source_ip, 0))
    local = f"{source_ip}:{sock.getsockname()[1]}"
    body = SDP.format(ip=source_ip, port=rtp_port) if sdp else ""
    invites: dict[str, _Invite] = {}
    started = time.monotonic()
    for _ in range(count):
        call_id, branch = uuid.uuid4().hex, uuid.uuid4().hex
        data = message("INVITE", target, local, call_id, 1, branch, body=body)
        invites[call_id] = _Invite(call_id, branch, data, time.monotonic())
        sock.sendto(data, dest)
    result = BurstResult()
    deadline = started + timeout
    sock.settimeout(0.05)
    while time.monotonic() < deadline and any(not i.final or not i.ended for i in invites.values()):
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            _retransmit(sock, dest, invites)
            continue
        _answer(sock, dest, target, local, invites, data, result)
    result.unanswered = sum(1 for i in invites.values() if not i.final)
    result.seconds = time.monotonic() - started
    sock.close()
    return result


def _retransmit(sock: socket.socket, dest: tuple[str, int], invites: dict[str, _Invite]) -> None:
    now = time.monotonic()
    for invite in invites.values():
        if not invite.final and not invite.provisional and now - invite.sent >= invite.interval:
            sock.sendto(invite.data, dest)
            invite.sent, invite.interval = now, min(invite.interval * 2, 4.0)
        if not invite.ended and now - invite.bye_sent >= 0.5:
            sock.sendto(invite.bye, dest)
            invite.bye_sent = now


def _answer(sock: socket.socket, dest: tuple[str, int], target: str, local: str, invites: dict[str, _Invite],
            data: bytes, result: BurstResult) -> None:
    if not data.startswith(b"SIP/2.0 "):
        if data.startswith(b"BYE "):  # the unit ending an answered call itself
            sock.sendto(_ok(data), dest)
        return
    invite = invites.get(header(data, "call-id"))
    if invite is not None and header(data, "cseq").endswith("BYE") and int(data[8:11]) >= 200:
        invite.ended = True
    if invite is None or not header(data, "cseq").endswith("INVITE"):
        return
    code = int(data[8:11])
    if code < 200:
        invite.provisional = True
        return
    tag = header(data, "to").partition("tag=")[2].split(";")[0]
    if code < 300:
        branch = uuid.uuid4().hex
        sock.sendto(message("ACK", target, local, invite.call_id, 1, branch, tag), dest)
        if not invite.final:
            invite.bye, invite.ended = message("BYE", target, local, invite.call_id, 2, uuid.uuid4().hex, tag), False
            sock.sendto(invite.bye, dest)
            invite.bye_sent = time.monotonic()
    else:  # ACK of a non-2xx answer belongs to the INVITE's transaction (same branch)
        sock.sendto(message("ACK", target, local, invite.call_id, 1, invite.branch, tag), dest)
    if not invite.final:
        invite.final = code
        result.codes[code] += 1


def _ok(request: bytes) -> bytes:
    lines = [f"{name}: {header(request, name.lower())}" for name in ("Via", "From", "To", "Call-ID", "CSeq")]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
