"""The pjsua2 backend in this process (real pjsua2, real sipp): its thread can die and a new one starts."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from pathlib import Path

from doorphoned.sip.backend import SipSettings
from doorphoned.sip.pj import PjBackend
from tests.sipp import (
    _ACK,
    _BYE,
    _INVITE,
    _SDP,
    Sipp,
    _wrap,
    free_port_pair,
    free_sip_port,
    free_udp_port,
    uac_scenario,
    uas_answer_scenario,
)


def loopback_settings(port: int) -> SipSettings:
    """A stack on ``port`` (free RTP ports) that takes calls from 127.0.0.1."""
    return SipSettings(port=port, rtp_port=free_port_pair(), allowed_hosts=frozenset({"127.0.0.1"}))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.died = asyncio.Event()

    def on_backend_died(self, error: str) -> None:
        self.events.append(("died", error))
        self.died.set()

    def __getattr__(self, name: str):
        return lambda *args: self.events.append((name, *args))


def test_sip_thread_death_is_reported_and_a_new_stack_serves_calls(tmp_path: Path):
    port = free_sip_port()
    settings = loopback_settings(port)

    async def scenario() -> list[tuple]:
        first, recorder = PjBackend(settings), Recorder()
        await first.start(recorder)
        await first.crash()
        await asyncio.wait_for(recorder.died.wait(), 5)
        assert not first.alive and "injected" in recorder.events[-1][1]
        await first.stop()
        second, calls = PjBackend(settings), Recorder()
        await second.start(calls)  # same port, same process: the old stack released everything
        sipp = Sipp(tmp_path, "after", uac_scenario("#", hold_ms=200), f"127.0.0.1:{port}", "-m", "1",
                    "-timeout", "10s", "-timeout_error").start()
        assert await asyncio.to_thread(sipp.wait) == 0
        await second.stop()
        return calls.events

    events = asyncio.run(scenario())
    kinds = [e[0] for e in events]
    assert kinds.count("on_incoming") == 1 and ("on_dtmf" in kinds)
    assert next(e for e in events if e[0] == "on_dtmf")[2:4] == ("#", "rfc2833")


REFER = """  <send retrans="500">
    <![CDATA[
      REFER sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 REFER
      Contact: sip:sipp@[local_ip]:[local_port]
      Refer-To: <sip:premium@127.0.0.1:{port}>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="603"/>
  <pause milliseconds="1500"/>
"""


def test_a_peer_cannot_make_the_unit_call_elsewhere_with_refer(tmp_path: Path):
    """REFER would have the unit dial any number through its registrar (toll fraud): refused with 603."""
    port, elsewhere = free_sip_port(), free_udp_port()
    settings = loopback_settings(port)
    body = _INVITE.format(sdp=_SDP) + '  <recv response="100" optional="true"/>\n  <recv response="180" ' \
        'optional="true"/>\n  <recv response="200" rtd="true"/>\n' + _ACK + REFER.format(port=elsewhere) + \
        _BYE.format(cseq=3)

    async def scenario() -> tuple[int, int, list[tuple]]:
        backend, recorder = PjBackend(settings), Recorder()
        await backend.start(recorder)
        target = Sipp(tmp_path, "elsewhere", uas_answer_scenario(), "-m", "1", "-timeout", "8s",
                      port=elsewhere).start()
        caller = Sipp(tmp_path, "referrer", _wrap("refer", body), f"127.0.0.1:{port}", "-m", "1", "-timeout",
                      "10s", "-timeout_error").start()
        rc = await asyncio.to_thread(caller.wait, 15)
        invites = target.requests("INVITE")
        target.kill()
        await backend.stop()
        return rc, invites, recorder.events

    rc, invites, events = asyncio.run(scenario())
    assert rc == 0  # the REFER got its 603 and the call went on to a normal BYE
    assert invites == 0
    assert [e[0] for e in events].count("on_incoming") == 1


def test_dtmf_in_rtp_from_anyone_but_the_caller_is_ignored(tmp_path: Path):
    """pjmedia takes RTP from any address; a telephone-event from a third host must not count as a key."""
    port = free_sip_port()
    settings = loopback_settings(port)

    async def scenario() -> list[tuple]:
        backend, recorder = PjBackend(settings), Recorder()
        await backend.start(recorder)
        caller = Sipp(tmp_path, "held", uac_scenario("1", hold_ms=3000), f"127.0.0.1:{port}", "-m", "1",
                      "-timeout", "10s").start()
        rtp_port = 0
        for _ in range(50):
            await asyncio.sleep(0.1)
            found = re.search(r"SIP/2.0 200 OK.*?m=audio (\d+)", caller.messages(), re.S)
            if found:
                rtp_port = int(found.group(1))
                break
        await asyncio.sleep(1.2)  # the caller's own "1" first
        forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forger.bind(("127.0.0.2", 0))
        for seq in range(20):  # RFC 2833 telephone-event "#" (11), end bit on the last packets
            end = 0x80 if seq >= 15 else 0
            header = struct.pack("!BBHII", 0x80, (0x80 if seq == 0 else 0) | 101, 1000 + seq, 160000, 0x1234567)
            forger.sendto(header + struct.pack("!BBH", 11, end | 10, 160 * (seq + 1)), ("127.0.0.1", rtp_port))
            await asyncio.sleep(0.02)
        forger.close()
        await asyncio.to_thread(caller.wait, 15)
        stats = backend.stats()
        await backend.stop()
        return [*recorder.events, ("stats", stats.dtmf_refused)]

    events = asyncio.run(scenario())
    digits = [e[2] for e in events if e[0] == "on_dtmf"]
    assert digits == ["1"]  # the caller's key is heard, the forged "#" is not
    assert events[-1][1] >= 1
