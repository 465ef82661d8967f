"""The MJPEG part reader on hostile byte streams: each bad shape is skipped (counted) and the next good part
still comes out; nothing is held beyond the part limit."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from doorphoned.camera.mjpeg import MjpegReader, NotMjpegError, StreamEndedError, boundary_of

B = b"frame"


def jpeg(level: int = 128) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), level, np.uint8))
    assert ok
    return data.tobytes()


def part(body: bytes, length: int | str | None = None, kind: str = "image/jpeg") -> bytes:
    head = b"--" + B + f"\r\nContent-Type: {kind}\r\n".encode()
    if length != "none":
        head += f"Content-Length: {len(body) if length is None else length}\r\n".encode()
    return head + b"\r\n" + body + b"\r\n"


def reader(data: bytes, max_part: int = 1 << 20) -> MjpegReader:
    return MjpegReader(io.BufferedReader(io.BytesIO(data)), B, max_part)  # type: ignore[arg-type]


def test_good_parts_come_out_in_order():
    a, b = jpeg(10), jpeg(200)
    r = reader(part(a) + part(b))
    assert r.next_jpeg() == a and r.next_jpeg() == b
    with pytest.raises(StreamEndedError):
        r.next_jpeg()
    assert r.skipped == {}


@pytest.mark.parametrize(("bad", "counted"), [
    (b"garbage line\r\n" * 50 + b"\x00\xff" * 3000 + b"\r\n", "garbage between parts"),
    (part(b"%PDF-1.4 not a jpeg"), "part that is not a JPEG"),
    (part(jpeg(), kind="text/html"), "part that is not a JPEG"),
    (part(b"\xff\xd8" + b"x" * 5000, length=5002), "oversize part"),
    (part(jpeg(), length="12abc"), "bad Content-Length"),
])
def test_a_bad_part_is_skipped_and_the_next_good_one_read(bad: bytes, counted: str):
    good = jpeg(77)
    r = reader(part(jpeg(1)) + bad + part(good), max_part=4096)
    r.next_jpeg()
    assert r.next_jpeg() == good
    assert r.skipped.get(counted) == 1, r.skipped


def test_a_huge_content_length_costs_one_part_not_the_stream():
    # Claims 3 GB and sends a few bytes: nothing is allocated, and the next part is read.
    good = jpeg(99)
    r = reader(part(b"\xff\xd8tiny", length=3_000_000_000) + part(good), max_part=4096)
    assert r.next_jpeg() == good
    assert r.skipped["oversize part"] == 1  # (its body counted as garbage before the next boundary)


def test_a_truncated_part_ends_the_stream():
    good = jpeg()
    r = reader(part(good)[: len(good) // 2])
    with pytest.raises(StreamEndedError, match="cut short"):
        r.next_jpeg()


def test_parts_without_content_length_are_read_to_the_next_boundary():
    a, b = jpeg(30), jpeg(220)
    r = reader(part(a, length="none") + part(b, length="none") + b"--" + B + b"--\r\n")
    assert r.next_jpeg() == a and r.next_jpeg() == b
    with pytest.raises(StreamEndedError):
        r.next_jpeg()


def test_endless_garbage_without_a_boundary_ends_without_growing():
    r = reader(b"A" * 5_000_000)  # no newline: read in bounded lines, never kept
    with pytest.raises(StreamEndedError):
        r.next_jpeg()


def test_boundary_forms_and_wrong_content_types():
    assert boundary_of('multipart/x-mixed-replace; boundary="--myframe"') == b"myframe"
    assert boundary_of("multipart/x-mixed-replace;boundary=abc") == b"abc"
    with pytest.raises(NotMjpegError):
        boundary_of("text/html")
    with pytest.raises(NotMjpegError):
        boundary_of("multipart/x-mixed-replace")
