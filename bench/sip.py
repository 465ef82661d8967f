#!/usr/bin/env python3
"""SIP figures: DTMF digit received -> relay (target p99 < 20 ms), call button -> first INVITE sent,
INVITE -> 200 OK for auto-answered calls.

Starts its own hw-sim and doorphoned (--sim, door 1 bistable so every code toggles the lock).
* DTMF: real sipp calls send RFC 2833 `#` (door 1's code); the digit's arrival is pjsua2's
  ``onDtmfDigit`` time (``doorphonectl status``: sip.dtmf_seen, CLOCK_MONOTONIC) and the relay's is
  hw-sim's (its watch stream, same clock).
* Call button: hw-sim presses call button 1; this script is the called app (a UDP socket) and
  times the INVITE's arrival; it answers 486 so the next press can follow.
* Answer: this script sends INVITEs from loopback (an allowed peer) and times the 200 OK.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.latency import percentile  # noqa: E402
from tests.procs import Daemon, HwSim  # noqa: E402
from tests.sipp import Sipp, free_udp_port, sip_env, uac_scenario, wait_sip_up  # noqa: E402


def figures(what: str, values: list[float], target: str = "") -> None:
    print(f"{what} ({len(values)}): p50 {percentile(values, 50):.2f} ms  p99 {percentile(values, 99):.2f} ms  "
          f"max {max(values):.2f} ms" + (f"  (target {target})" if target else ""))


class HwsimWatch:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.sock.sendall(b'{"op": "watch"}\n')
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.sock.settimeout(60)  # a call's set-up and its digits, on a loaded machine

    def relay_changes(self, relay: int, n: int) -> list[float]:
        out = []
        while len(out) < n:
            event = json.loads(self.file.readline())
            if event.get("ev") == "relay" and event["relay"] == relay:
                out.append(float(event["mono"]))
        return out


def sip_status(daemon: Daemon) -> dict:
    return next(f["sip"] for f in daemon.ctl_json("status")["features"] if "sip" in f)


def bench_dtmf(daemon: Daemon, sim: HwSim, work: Path, digits: int) -> None:
    watch = HwsimWatch(sim.socket)
    latencies: list[float] = []
    per_call = min(digits, 10)
    call = 0
    while len(latencies) < digits:
        n = min(per_call, digits - len(latencies))
        # The caller holds 2 s after its last digit: the SIP process runs at nice 5 and, short of CPU,
        # may read the BYE before the last digit's RTP. "#1#1...": replaying one capture twice in a row
        # repeats its RTP timestamp, which RFC 2833 receivers rightly take for the same key press; a "1"
        # between two "#" makes each one new.
        sipp = Sipp(work, f"dtmf{call}", uac_scenario("#1" * n, hold_ms=2000), daemon.sip_target, "-m", "1",
                    "-timeout", "60s", "-timeout_error").start()
        relays = watch.relay_changes(1, n)
        if sipp.wait(60) != 0:
            raise SystemExit(f"sipp call failed: {sipp.log}")
        # the status keeps when each key came, never which (codes are secrets): "#" is every other one
        seen = [d["mono"] for d in sip_status(daemon)["dtmf_seen"]][-2 * n::2]
        latencies += [(r - s) * 1000 for r, s in zip(relays, seen, strict=True)]
        call += 1
    figures("DTMF digit received -> relay energised", latencies, "p99 < 20 ms")


def bench_button(sim: HwSim, app: socket.socket, presses: int) -> None:
    control = socket.socket(socket.AF_UNIX)
    control.connect(str(sim.socket))
    replies = control.makefile("rb")
    latencies = []
    for _ in range(presses):
        started = time.perf_counter()
        control.sendall(b'{"op": "press", "kind": "call", "door": 1, "hold": 0.05}\n')
        replies.readline()
        data, peer = app.recvfrom(65535)
        while not data.startswith(b"INVITE "):
            data, peer = app.recvfrom(65535)
        latencies.append((time.perf_counter() - started) * 1000)
        app.sendto(reply(data, 486, "Busy Here"), peer)
        drain(app, 0.3)
    figures("call button -> first INVITE received by the callee", latencies)


def drain(sock: socket.socket, seconds: float) -> None:
    """Answer what the unit still sends (ACK, retransmissions) for a while."""
    sock.settimeout(seconds)
    try:
        while True:
            sock.recvfrom(65535)
    except TimeoutError:
        pass
    finally:
        sock.settimeout(10)


def headers(message: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in message.decode(errors="replace").split("\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), value.strip())
    return out


def reply(request: bytes, code: int, text: str) -> bytes:
    h = headers(request)
    return (f"SIP/2.0 {code} {text}\r\nVia: {h['via']}\r\nFrom: {h['from']}\r\nTo: {h['to']};tag=bench\r\n"
            f"Call-ID: {h['call-id']}\r\nCSeq: {h['cseq']}\r\nContent-Length: 0\r\n\r\n").encode()


SDP = ("v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def request(method: str, target: str, local: str, call_id: str, cseq: int, to_tag: str = "",
            body: str = "") -> bytes:
    to = f"<sip:door@{target}>" + (f";tag={to_tag}" if to_tag else "")
    kind = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:door@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"From: <sip:bench@{local}>;tag=b{call_id[:8]}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:bench@{local}>\r\nMax-Forwards: 70\r\n{kind}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def bench_answer(daemon: Daemon, calls: int) -> None:
    target = daemon.sip_target
    host, port = target.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    local = f"127.0.0.1:{sock.getsockname()[1]}"
    latencies = []
    for _ in range(calls):
        call_id = uuid.uuid4().hex
        started = time.perf_counter()
        sock.sendto(request("INVITE", target, local, call_id, 1, body=SDP.format(port=free_udp_port())),
                    (host, int(port)))
        while True:
            data, _ = sock.recvfrom(65535)
            if data.startswith(b"SIP/2.0 200") and call_id.encode() in data:
                break
        latencies.append((time.perf_counter() - started) * 1000)
        tag = headers(data)["to"].split("tag=")[1].split(";")[0]
        sock.sendto(request("ACK", target, local, call_id, 1, tag), (host, int(port)))
        sock.sendto(request("BYE", target, local, call_id, 2, tag), (host, int(port)))
        drain(sock, 0.1)
    figures("INVITE -> 200 OK, auto-answered call", latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digits", type=int, default=100, help="DTMF codes sent")
    parser.add_argument("--presses", type=int, default=50, help="call button presses")
    parser.add_argument("--calls", type=int, default=50, help="auto-answered calls")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    app.bind(("127.0.0.1", 0))
    app.settimeout(10)
    env = sip_env(DOORPHONED_DOORS_1_MODE="bistable", DOORPHONED_SIP_TARGETS_1_PREFERENCE="app",
                  DOORPHONED_SIP_TARGETS_1_APP=f'["sip:app@127.0.0.1:{app.getsockname()[1]}"]',
                  DOORPHONED_SIP_TARGETS_1_MONITORS="[]", DOORPHONED_SIP_TARGETS_1_PHONE="")
    daemon = Daemon(home / "d", sim, env=env)
    daemon.sip_target = f"127.0.0.1:{env['DOORPHONED_SIP_PORT']}"  # type: ignore[attr-defined]
    try:
        daemon.start()
        wait_sip_up(daemon)
        if args.digits:
            bench_dtmf(daemon, sim, home, args.digits)
        if args.presses:
            bench_button(sim, app, args.presses)
        if args.calls:
            bench_answer(daemon, args.calls)
    except Exception:
        print(daemon.log_text()[-3000:], file=sys.stderr)
        raise
    finally:
        daemon.kill()
        sim.stop()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
