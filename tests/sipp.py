"""Real sipp (Debian sip-tester) as the far end of calls: scenarios written per test, run as processes."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

from tests.ports import bindable

PCAP_DIR = Path("/usr/share/sip-tester")
_PCAP_NAMES = {"#": "pound", "*": "star"}

_SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""

_INVITE = """  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

{sdp}
    ]]>
  </send>
"""

_ACK = """  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

_INFO = """  <send retrans="500">
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

Signal={digit}
Duration=160
    ]]>
  </send>
  <recv response="200"/>
"""

_BYE = """  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""


def wait_sip_up(daemon: object, timeout: float = 30.0) -> dict:
    """The daemon's SIP status once its SIP process listens (it starts after READY=1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.ctl_json("status")  # type: ignore[attr-defined]
        sip = next((f["sip"] for f in status["features"] if "sip" in f), None)
        if sip is not None and sip["running"]:
            return sip
        time.sleep(0.05)
    raise AssertionError(f"SIP did not come up within {timeout} s")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_sip_port() -> int:
    """A port free on loopback for both UDP and TCP (the daemon listens on both; sipp over TCP binds its port
    for TCP).

    SIP ports stay in the kernel's ephemeral range, unlike tests/ports.py's, as the SIP suite has always run:
    with a SIP port below it (5060 on hardware) the fuzz's abort of the SIP process first showed often (it came
    with ephemeral ports too, less often; the lower ``sip.tcp_max_connections`` ended it, docs/sip.md). The
    race the ephemeral range brings (another connection takes the port between the choice and sipp's bind) is
    :meth:`Sipp.start`'s retry."""
    for _ in range(50):
        port = free_udp_port()
        if bindable(port):
            return port
    raise RuntimeError("no free SIP port")


def sip_env(**extra: str) -> dict[str, str]:
    """Environment for a daemon with SIP on free loopback ports (tests run in parallel)."""
    return {"DOORPHONED_SIP_PORT": str(free_sip_port()), "DOORPHONED_SIP_RTP_PORT": str(free_port_pair()), **extra}


def free_port_pair() -> int:
    """A free even UDP port whose successor is free too (RTP + RTCP)."""
    for _ in range(50):
        port = free_udp_port() & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
                return port
        except OSError:
            continue
    raise RuntimeError("no free RTP port pair")


def _wrap(name: str, body: str) -> str:
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n{body}</scenario>\n'


def uac_scenario(digits: str = "", method: str = "rfc2833", hold_ms: int = 500, bye: bool = True,
                 expect: str = "200") -> str:
    """A caller: INVITE (PCMA + telephone-event/101), then DTMF digits, then BYE.

    ``expect`` is the final response awaited ("200", or e.g. "403" for a refused call).
    """
    body = _INVITE.format(sdp=_SDP)
    body += '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
    if expect != "200":
        return _wrap("uac refused", body + f'  <recv response="{expect}"/>\n' + _ACK)
    body += '  <recv response="200" rtd="true"/>\n' + _ACK
    cseq = 2
    for digit in digits:
        if method == "rfc2833":
            pcap = PCAP_DIR / f"dtmf_2833_{_PCAP_NAMES.get(digit, digit)}.pcap"
            body += (f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
                     f'  <pause milliseconds="{300}"/>\n')
        else:
            body += _INFO.format(cseq=cseq, digit=digit)
            cseq += 1
    body += f'  <pause milliseconds="{hold_ms}"/>\n'
    if bye:
        body += _BYE.format(cseq=cseq)
    else:
        body += '  <recv request="BYE"/>\n  <send><![CDATA[\n      SIP/2.0 200 OK\n      [last_Via:]\n' \
                '      [last_From:]\n      [last_To:]\n      [last_Call-ID:]\n      [last_CSeq:]\n' \
                '      Content-Length: 0\n\n    ]]></send>\n'
    return _wrap("uac dtmf", body)


_UAS_REPLY = """  <send>
    <![CDATA[
      SIP/2.0 {code} {text}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
{extra}      Content-Length: [len]
{body}
    ]]>
  </send>
"""
_UAS_SDP = """      Content-Type: application/sdp
"""
_UAS_SDP_BODY = """
v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 8 120
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:120 telephone-event/8000
"""


def _reply(code: int, text: str, sdp: bool = False) -> str:
    return _UAS_REPLY.format(code=code, text=text, extra=_UAS_SDP if sdp else "", body=_UAS_SDP_BODY if sdp else "")


def dtmf_pcap(digit: str, payload_type: int = 101, workdir: Path | None = None) -> Path:
    """sip-tester's RFC 2833 capture of ``digit``; with another payload type, a patched copy in ``workdir``.

    pjsua offers telephone-event as 120 in its own INVITEs, while the shipped captures carry 101.
    """
    path = PCAP_DIR / f"dtmf_2833_{_PCAP_NAMES.get(digit, digit)}.pcap"
    if payload_type == 101 or workdir is None:
        return path
    data = bytearray(path.read_bytes())
    offset = 24  # pcap global header
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset + 8:offset + 12], "little")
        rtp = offset + 16 + 14 + 20 + 8  # record header, Ethernet, IPv4, UDP
        data[rtp + 1] = (data[rtp + 1] & 0x80) | payload_type
        offset += 16 + length
    out = workdir / f"{path.stem}_pt{payload_type}.pcap"
    out.write_bytes(bytes(data))
    return out


def uas_answer_scenario(delay_ms: int = 0, digits: str = "", workdir: Path | None = None) -> str:
    """A callee that rings, answers after ``delay_ms``, optionally sends DTMF, then waits for BYE."""
    body = '  <recv request="INVITE"/>\n' + _reply(180, "Ringing")
    if delay_ms:
        body += f'  <pause milliseconds="{delay_ms}"/>\n'
    body += _reply(200, "OK", sdp=True) + '  <recv request="ACK"/>\n'
    for i, digit in enumerate(digits):
        pcap = dtmf_pcap(digit, 120, workdir)
        body += f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
        if i < len(digits) - 1:  # no pause after the last: a BYE may follow at once (hang up after open)
            body += '  <pause milliseconds="300"/>\n'
    body += '  <recv request="BYE"/>\n' + _reply(200, "OK")
    return _wrap("uas answer", body)


def uas_ring_scenario() -> str:
    """A callee that rings until it is CANCELled (answers 200 to CANCEL, 487 to the INVITE)."""
    body = ('  <recv request="INVITE"/>\n' + _reply(180, "Ringing")
            + '  <recv request="CANCEL">\n    <action><ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" '
              'assign_to="cseqnum"/></action>\n  </recv>\n'
            + _reply(200, "OK") + _UAS_REPLY.format(code=487, text="Request Terminated", extra="", body="")
            .replace("[last_CSeq:]", "CSeq: [$cseqnum] INVITE") + '  <recv request="ACK"/>\n')
    return _wrap("uas ring", body)


SIPP_BIND_ERROR = 254  # sipp's exit status -2: "fatal error binding a socket"
BIND_ATTEMPTS = 3
BIND_GRACE = 0.3  # s: sipp fails a bind at once, before any message


class Sipp:
    """One sipp process with its scenario file; ``wait`` returns its exit status (0 = every call passed)."""

    def __init__(self, workdir: Path, name: str, scenario: str, *args: str, port: int | None = None,
                 ip: str = "127.0.0.1") -> None:
        self.path = workdir / f"{name}.xml"
        self.path.write_text(scenario)
        self.port = port or free_sip_port()
        self._port_chosen = port is None
        self._port_shown = False  # uri_host was read: a callee's port is in some config now, it cannot move
        self.ip = ip
        self.log = workdir / f"{name}.log"
        self.args = args
        self.media_port = free_port_pair()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        workdir = self.path.parent
        return ["sipp", "-nostdin", "-sf", str(self.path), "-i", self.ip, "-p", str(self.port),
                "-mp", str(self.media_port), "-trace_err", "-error_file", str(workdir / f"{self.path.stem}.err"),
                "-message_file", str(workdir / f"{self.path.stem}.msg"), "-trace_msg", *self.args]

    @property
    def uri_host(self) -> str:
        self._port_shown = True
        return f"{self.ip}:{self.port}"

    def start(self) -> Sipp:
        """Start sipp; if it cannot bind its ports (exit 254: another process took one between the choice and
        the bind), again on fresh ones, unless its SIP port is already known to the unit."""
        for _ in range(BIND_ATTEMPTS):
            self.proc = subprocess.Popen(self.argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                         cwd=self.path.parent)
            try:
                if self.proc.wait(BIND_GRACE) != SIPP_BIND_ERROR:
                    break
            except subprocess.TimeoutExpired:
                break  # running: it bound its sockets
            self.media_port = free_port_pair()
            if self._port_chosen and not self._port_shown:
                self.port = free_sip_port()
        return self

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sipp {self.path.name} did not finish in {timeout} s: {self.messages()[-2000:]}") \
                from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def messages(self) -> str:
        path = self.path.parent / f"{self.path.stem}.msg"
        return path.read_text(errors="replace") if path.exists() else ""

    def requests(self, method: str) -> int:
        """How many ``method`` request lines are in sipp's message trace (for a UAS: requests it received)."""
        return len(re.findall(rf"^\s*{method} sips?:", self.messages(), flags=re.MULTILINE))


def registrar_scenario(username: str, password: str, realm: str = "doorphone.test", expires: int = 300,
                       refreshes: int = 0) -> str:
    """A registrar that challenges with digest auth, checks the answer (200, or 403 when wrong), grants
    ``expires`` seconds and then waits for ``refreshes`` re-registrations."""
    challenge = _UAS_REPLY.format(code=401, text="Unauthorized", body="", extra=(
        f'      WWW-Authenticate: Digest realm="{realm}", nonce="4e6f6e6365313233", algorithm=MD5\n'))
    ok = _UAS_REPLY.format(code=200, text="OK", body="", extra=f"      Expires: {expires}\n").replace(
        "Contact: <sip:[local_ip]:[local_port];transport=[transport]>", f"[last_Contact:];expires={expires}")
    body = ('  <recv request="REGISTER"/>\n' + challenge
            + '  <recv request="REGISTER">\n    <action><verifyauth assign_to="authvalid" '
              f'username="{username}" password="{password}"/></action>\n  </recv>\n'
            + '  <nop hide="true" test="authvalid" next="good"/>\n' + _reply(403, "Forbidden")
            + '  <nop next="end"/>\n  <label id="good"/>\n' + ok
            + ('  <recv request="REGISTER"/>\n' + ok) * refreshes + '  <label id="end"/>\n')
    return _wrap("registrar", body)


def uas_busy_scenario() -> str:
    """A callee that refuses at once with 486 Busy Here."""
    return _wrap("uas busy", '  <recv request="INVITE"/>\n' + _reply(486, "Busy Here") + '  <recv request="ACK"/>\n')
