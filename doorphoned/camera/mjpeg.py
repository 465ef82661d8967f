"""An MJPEG-over-HTTP reader (``multipart/x-mixed-replace``), read by hand instead of through FFmpeg.

Why: FFmpeg decodes every JPEG in full before we see it, which is most of an idle camera's cost. Reading
the parts ourselves hands the JPEG *bytes* to the capture loop, which decides per part whether a cheap
reduced decode is enough (``camera/capture.py``). hw-sim's camera and most IP cameras serve this format.

The stream is untrusted: every read is bounded. A part announced larger than ``max_part`` is skipped line
by line up to the next boundary (never held in memory, and a lying length costs one part, not the stream),
garbage between parts is skipped up to the next boundary line, a part that is not a JPEG is dropped, a part
without ``Content-Length`` is read up to the next boundary (bounded too); each of these is counted in
:attr:`MjpegReader.skipped` and logged when first seen, then at most once per :data:`LOG_EVERY` seconds.
A stream that ends (or stalls past the socket timeout) raises :class:`StreamEndedError`.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MAX_LINE = 1024
MAX_HEADERS = 32
MAX_PART = 4 * 1024 * 1024
LOG_EVERY = 10.0
JPEG_START = b"\xff\xd8"


class StreamEndedError(ConnectionError):
    """The stream closed, stalled or was cut in the middle of a part."""


class NotMjpegError(ConnectionError):
    """The URL does not serve ``multipart/x-mixed-replace`` (HTTP error, another content type)."""


def _header_lines(stream: BinaryIO) -> dict[str, str]:
    """Header lines up to the blank line, as a lower-cased dict; bounded in count and length."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = stream.readline(MAX_LINE)
        if not line:
            raise StreamEndedError("stream ended in headers")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    raise StreamEndedError("too many header lines")


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary from a Content-Type, without quotes and without a leading ``--``."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        raise NotMjpegError(f"content type {kind.strip()[:60]!r} is not multipart/x-mixed-replace")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value.strip('"'):
            return value.strip('"').removeprefix("--").encode("latin-1")
    raise NotMjpegError("multipart stream without a boundary")


def open_http(url: str, timeout: float) -> tuple[socket.socket, BinaryIO, bytes]:
    """GET ``url`` (``http://`` only; user:password in the URL becomes Basic auth); the socket, its reader
    positioned at the first part, and the boundary."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise NotMjpegError("only http:// URLs are read as MJPEG")
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = [f"GET {path} HTTP/1.0", f"Host: {parts.netloc.rpartition('@')[2]}", "Accept: */*"]
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            request.append(f"Authorization: Basic {base64.b64encode(secret).decode()}")
        sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        stream = sock.makefile("rb")
        status = stream.readline(MAX_LINE).split()
        if len(status) < 2 or status[1] != b"200":
            raise NotMjpegError(f"HTTP status {b' '.join(status[1:3]).decode('latin-1')[:40] or 'missing'}")
        return sock, stream, boundary_of(_header_lines(stream).get("content-type", ""))
    except BaseException:
        sock.close()
        raise


class MjpegReader:
    """The JPEG parts of one multipart stream, in order: ``next_jpeg()`` until :class:`StreamEndedError`."""

    def __init__(self, stream: BinaryIO, boundary: bytes, max_part: int = MAX_PART) -> None:
        self._stream = stream
        self._marker = b"--" + boundary
        self.max_part = max_part
        self.parts = 0
        self.skipped: dict[str, int] = {}
        self._logged = 0.0
        self._at_part = False  # a part without Content-Length ends at the next boundary, already read

    def next_jpeg(self) -> bytes:
        """The next part that is a JPEG no larger than ``max_part``."""
        while True:
            if not self._at_part:
                self._to_boundary()
            self._at_part = False
            jpeg = self._part(_header_lines(self._stream))
            if jpeg is not None:
                self.parts += 1
                return jpeg

    def _to_boundary(self) -> None:
        garbage = 0
        while True:
            line = self._stream.readline(MAX_LINE)
            if not line:
                raise StreamEndedError("stream ended")
            if line.startswith(self._marker):
                if line.rstrip().endswith(self._marker + b"--"):
                    raise StreamEndedError("stream closed by its last boundary")
                break
            garbage += len(line)
        if garbage > 2:  # the CRLF after a part's body is expected
            self.skip("garbage between parts", f"{garbage} bytes")

    def _part(self, headers: dict[str, str]) -> bytes | None:
        length = headers.get("content-length")
        if length is None:
            body = self._until_boundary()
        elif not length.isdigit():
            self.skip("bad Content-Length", repr(length[:20]))
            return None
        elif int(length) > self.max_part:
            # Not read as a body: its lines are skipped up to the next boundary like garbage, so a length that
            # lies (3 GB announced, then good parts) costs one part, not the stream.
            self.skip("oversize part", f"{length} bytes > {self.max_part}")
            return None
        else:
            body = self._exactly(int(length))
        if body is None:
            return None
        kind = headers.get("content-type", "image/jpeg").lower()
        if not kind.startswith("image/jpeg") or not body.startswith(JPEG_START):
            self.skip("part that is not a JPEG", kind[:40])
            return None
        return body

    def _exactly(self, size: int) -> bytes:
        body = self._stream.read(size)
        if len(body) < size:
            raise StreamEndedError(f"part cut short ({len(body)} of {size} bytes)")
        return body

    def _until_boundary(self) -> bytes | None:
        body, size = [], 0
        while True:
            line = self._stream.readline(MAX_LINE)
            if not line:
                raise StreamEndedError("stream ended inside a part")
            if line.startswith(self._marker):
                self._at_part = True
                break
            size += len(line)
            if size <= self.max_part:
                body.append(line)
        if size > self.max_part:
            self.skip("oversize part", f"{size} bytes without Content-Length")
            return None
        return b"".join(body).removesuffix(b"\r\n")

    def skip(self, what: str, detail: str) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1
        now = time.monotonic()
        if self.skipped[what] == 1 or now - self._logged >= LOG_EVERY:  # each new kind at once, then a summary
            self._logged = now
            log.warning("camera stream: %s skipped (%s); skipped so far: %s", what, detail, self.skipped)
