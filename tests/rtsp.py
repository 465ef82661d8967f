"""The monitor stream as tests meet it: its host process, a raw RTSP client (exact status codes, digest
auth, TCP interleaved RTP) and an OpenCV viewer that decodes frames and reads hw-sim's stamp."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.procs import ROOT, wait_for

PATH = "/live/ch00_0"
PASSWORD = "door-phone-installer-pw"


class MonitorHost:
    """``python -m doorphoned.camera.monitor --synthetic`` with its JSON-lines control."""

    def __init__(self, tmp: Path, *args: str, password: str | None = PASSWORD) -> None:
        self.tmp = tmp
        self.args = list(args)
        self.password = password
        self.log = tmp / "monitor.log"
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._lock = threading.Lock()

    def start(self, port: int = 0) -> None:
        argv = [sys.executable, "-m", "doorphoned.camera.monitor", "--synthetic", "--port", str(port), "-v"]
        if self.password is not None:
            pw_file = self.tmp / "stream-password"
            pw_file.write_text(self.password + "\n")
            argv += ["--password-file", str(pw_file)]
        self.proc = subprocess.Popen([*argv, *self.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log.open("w"), cwd=ROOT)
        ready = self._readline(timeout=90)
        assert ready.get("ready"), ready
        self.port = ready["port"]

    def _readline(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            raise AssertionError(f"monitor host gave no line in {timeout} s: {self.log.read_text()[-2000:]}")
        return json.loads(box[0])

    def request(self, op: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        return self.raw(json.dumps({"op": op, **fields}), timeout)

    def raw(self, line: str | bytes, timeout: float = 30) -> dict[str, Any]:
        """One request line (text, or bytes that need not be UTF-8) and its one reply."""
        data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
        with self._lock:
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.write(data + b"\n")
            self.proc.stdin.flush()
            return self._readline(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, user: str = "installer", password: str | None = PASSWORD) -> str:
        auth = f"{user}:{password}@" if password is not None else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{PATH}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RtspError(AssertionError):
    pass


class RawRtsp:
    """One RTSP connection speaking just enough of the protocol: digest auth, TCP interleaved play."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None,
                 receive_buffer: int = 0) -> None:
        """``receive_buffer``: the socket's SO_RCVBUF, set before connecting (a small one makes a viewer that
        stops reading fill up at once, as a phone on a bad network does)."""
        self.port, self.user, self.password = port, user, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")
        self.cseq = 0
        self.session: str | None = None
        self.challenge: dict[str, str] | None = None
        self.server_ssrc = 0
        self.highest_seq = 0
        self.url = f"rtsp://127.0.0.1:{port}{PATH}"

    @classmethod
    def from_url(cls, url: str) -> RawRtsp:
        parts = urlsplit(url)
        return cls(parts.port or 554, unquote(parts.username or ""), unquote(parts.password or ""))

    def _auth(self, method: str, uri: str) -> str:
        if not self.challenge or self.user is None:
            return ""
        realm, nonce = self.challenge["realm"], self.challenge["nonce"]
        ha1 = hashlib.md5(f"{self.user}:{realm}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return (f'Authorization: Digest username="{self.user}", realm="{realm}", nonce="{nonce}", '
                f'uri="{uri}", response="{response}"\r\n')

    def request(self, method: str, uri: str | None = None, headers: str = "") -> tuple[int, dict[str, str], bytes]:
        """Send one request (answering a digest challenge once) and return (status, headers, body)."""
        uri = uri or self.url
        for _attempt in range(2):
            self.cseq += 1
            session = f"Session: {self.session}\r\n" if self.session else ""
            self.sock.sendall(f"{method} {uri} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{session}{headers}"
                              f"{self._auth(method, uri)}\r\n".encode())
            status, head, body = self.response()
            if status == 401 and self.challenge is None and self.user is not None and "www-authenticate" in head:
                self.challenge = dict(re.findall(r'(\w+)="([^"]*)"', head["www-authenticate"]))
                continue
            return status, head, body
        return status, head, body

    def response(self) -> tuple[int, dict[str, str], bytes]:
        line = self._line()
        while line.startswith(b"$"):  # interleaved data before the reply: skip it
            self._skip_interleaved(line)
            line = self._line()
        match = re.match(rb"RTSP/1\.0 (\d{3})", line)
        if not match:
            raise RtspError(f"not an RTSP reply: {line[:80]!r}")
        head: dict[str, str] = {}
        while (line := self._line().rstrip(b"\r\n")):
            name, _, value = line.decode("latin-1").partition(":")
            head[name.strip().lower()] = value.strip()
        body = self.file.read(int(head.get("content-length", "0")))
        return int(match.group(1)), head, body

    def _line(self) -> bytes:
        first = self.file.read(1)
        if not first:
            raise RtspError("connection closed")
        if first == b"$":
            return first
        return first + self.file.readline()

    def _skip_interleaved(self, _dollar: bytes) -> tuple[int, bytes]:
        header = self.file.read(3)
        if len(header) < 3:
            raise RtspError("connection closed")
        return header[0], self.file.read(int.from_bytes(header[1:3], "big"))

    def play(self) -> int:
        """DESCRIBE, SETUP (TCP interleaved), PLAY; the first status that is not 200, or 200."""
        status, _, body = self.request("DESCRIBE", headers="Accept: application/sdp\r\n")
        if status != 200:
            return status
        control = re.search(rb"a=control:(\S+)", body.split(b"m=video", 1)[-1])
        track = control.group(1).decode() if control else "stream=0"
        track_url = track if track.startswith("rtsp://") else f"{self.url}/{track}"
        status, head, _ = self.request("SETUP", track_url, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        if status != 200:
            return status
        self.session = head["session"].split(";")[0]
        status, _, _ = self.request("PLAY", headers="Range: npt=0-\r\n")
        return status

    def _next_rtp(self, deadline: float) -> bytes:
        """The next RTP packet on the interleaved channel 0 (RTCP and replies skipped); raises when closed, or
        past ``deadline`` (monotonic): RTCP alone still flowing must fail a test on a stalled stream, not hang it."""
        while True:
            if time.monotonic() > deadline:
                raise RtspError("no RTP packet before the deadline: the stream stalled")
            first = self.file.read(1)
            if not first:
                raise RtspError("connection closed")
            if first != b"$":
                self.file.readline()
                continue
            channel, packet = self._skip_interleaved(first)
            if channel == 0 and len(packet) >= 12:
                self.server_ssrc = int.from_bytes(packet[8:12], "big")
                self.highest_seq = int.from_bytes(packet[2:4], "big")
                return packet

    def rtp_packets(self, count: int, timeout: float = 30) -> int:
        """Read interleaved packets until ``count`` RTP ones arrived within ``timeout`` s in all (RTCP alone
        flowing does not keep it waiting: a stream that stalled fails the test instead of hanging it)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        for _ in range(count):
            self._next_rtp(deadline)
        return count

    def key_frames_in(self, frames: int, timeout: float = 60) -> list[int]:
        """Read the next ``frames`` frames (RTP timestamps); the indexes of those that are H.264 key frames
        (an IDR slice, whole or fragmented)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        stamps: list[int] = []
        keys: set[int] = set()
        while True:
            packet = self._next_rtp(deadline)
            if len(packet) < 14:
                continue
            stamp = int.from_bytes(packet[4:8], "big")
            if not stamps or stamps[-1] != stamp:
                if len(stamps) == frames:
                    return sorted(keys)
                stamps.append(stamp)
            nal = packet[12] & 0x1F
            if (nal == 28 and packet[13] & 0x1F == 5) or nal == 5:
                keys.add(len(stamps) - 1)

    def send_receiver_report(self, fraction_lost: int, cumulative_lost: int, jitter: int = 0) -> None:
        """An RTCP receiver report about the server's stream, over the interleaved RTCP channel (1): what
        a viewer that reports over TCP sends (FFmpeg does not; GStreamer and VLC clients do)."""
        block = (self.server_ssrc.to_bytes(4, "big") + bytes([fraction_lost]) + cumulative_lost.to_bytes(3, "big")
                 + self.highest_seq.to_bytes(4, "big") + jitter.to_bytes(4, "big") + bytes(8))
        packet = bytes([0x81, 201]) + (7).to_bytes(2, "big") + (0x5EED).to_bytes(4, "big") + block
        self.sock.sendall(b"$\x01" + len(packet).to_bytes(2, "big") + packet)

    def closed_within(self, timeout: float) -> bool:
        """Whether the server closes this connection within ``timeout`` s (data read meanwhile is dropped)."""
        return self.closed_socket_within(self.sock, timeout)

    @staticmethod
    def closed_socket_within(sock: socket.socket, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if not sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.file.close()  # the file holds the descriptor too: both, or the server never sees the close
        self.sock.close()


FFMPEG_OPTIONS = "rtsp_transport;{transport}|analyzeduration;100000|probesize;32768|fflags;nobuffer"


def open_viewer(url: str, transport: str = "tcp") -> Any:
    """An OpenCV (FFmpeg) capture of the stream; the caller ``release()``s it."""
    import cv2
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_OPTIONS.format(transport=transport)
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 30000,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, 30000])
    return capture


def read_stamps(capture: Any, frames: int) -> list[tuple[int | None, float]]:
    """Decode ``frames`` frames: each one's stamp (or None) and the instant it was decoded."""
    from hwsim import stamp
    seen = []
    for _ in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        seen.append((stamp.read(frame), time.monotonic()))
    return seen


__all__ = ["MonitorHost", "RawRtsp", "open_viewer", "read_stamps", "wait_for"]
