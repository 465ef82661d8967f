"""Requests to the camera process: exactly one reply per ``req``, refusals carry the reason, and the daemon
side fails loudly (refused, no process, no reply, process gone) instead of hanging."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from doorphoned.camera import protocol
from doorphoned.camera.config import CameraConfig
from doorphoned.camera.feature import CameraError, CameraFeature
from doorphoned.camera.process import CameraProcess
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock


class Recorded:
    """The process's stdout, kept as decoded events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, ev: str, **fields: Any) -> None:
        self.events.append({"ev": ev, **fields})


def op(**message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def test_a_request_gets_one_reply_with_its_req_and_a_plain_op_none() -> None:
    out = Recorded()
    process = CameraProcess(out)  # type: ignore[arg-type]
    process.handle(op(op="wake", seconds=2))
    assert out.events == []
    process.handle(op(op="status", req=41))
    assert len(out.events) == 1
    reply = out.events[0]
    assert (reply["ev"], reply["req"], reply["ok"], reply["started"]) == ("reply", 41, True, False)
    assert reply["active"] is True  # the wake above


@pytest.mark.parametrize("line, reason", [
    (op(op="zoom", req=5), "unknown op"),
    (op(op="wake", req=6, seconds=99_999), "seconds"),
    (op(op="set-active", req=7, consumer="monitor", active="yes"), "active must be true or false"),
])
def test_a_refused_request_is_a_reply_with_the_reason_not_an_op_error(line: bytes, reason: str) -> None:
    out = Recorded()
    CameraProcess(out).handle(line)  # type: ignore[arg-type]
    [reply] = out.events
    assert reply["ev"] == "reply" and reply["ok"] is False and reason in reply["message"]


@pytest.mark.parametrize("req", [0, -1, 2**53 + 1, True, 1.5, "7", [1], None])
def test_a_bad_req_is_refused_as_an_op_error_and_nothing_runs(req: Any) -> None:
    out = Recorded()
    process = CameraProcess(out)  # type: ignore[arg-type]
    process.handle(op(op="wake", req=req, seconds=60) if req is not None else b'{"op":"wake","req":null}\n')
    if req is None:  # null is "no req": a plain op that ran
        assert out.events == [] and process.activity.active()
        return
    [error] = out.events
    assert error["ev"] == "op_error" and "req" in error["message"]
    assert not process.activity.active()


class Pipe:
    """The process's stdin as the feature writes it."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.lines.append(json.loads(data))

    def is_closing(self) -> bool:
        return self.closed


def feature_with_pipe() -> tuple[CameraFeature, Pipe, FixedClock]:
    clock = FixedClock(datetime(2026, 3, 29, 1, 30, tzinfo=UTC))
    feature = CameraFeature(CameraConfig(), EventBus(), clock)
    pipe = Pipe()
    feature._stdin = pipe  # type: ignore[assignment]
    return feature, pipe, clock


def reply_line(**fields: Any) -> bytes:
    return protocol.encode({"ev": "reply", **fields})


def test_the_feature_matches_replies_to_requests_in_any_order() -> None:
    asyncio.run(_test_the_feature_matches_replies_to_requests_in_any_order())


async def _test_the_feature_matches_replies_to_requests_in_any_order() -> None:
    feature, pipe, _ = feature_with_pipe()
    first = asyncio.ensure_future(feature.request("status"))
    second = asyncio.ensure_future(feature.request("snapshot", quality=80))
    await asyncio.sleep(0)
    reqs = [line["req"] for line in pipe.lines]
    assert [line["op"] for line in pipe.lines] == ["status", "snapshot"] and len(set(reqs)) == 2
    feature._event(reply_line(req=reqs[1], ok=True, file="c1.jpg"))
    feature._event(reply_line(req=reqs[0], ok=True, published=3))
    assert await second == {"file": "c1.jpg"}
    assert await first == {"published": 3}
    assert feature._pending == {}


def test_refusal_no_reply_no_process_and_process_gone_all_raise() -> None:
    asyncio.run(_test_refusal_no_reply_no_process_and_process_gone_all_raise())


async def _test_refusal_no_reply_no_process_and_process_gone_all_raise() -> None:
    feature, pipe, clock = feature_with_pipe()
    refused = asyncio.ensure_future(feature.request("snapshot"))
    await asyncio.sleep(0)
    feature._event(reply_line(req=pipe.lines[-1]["req"], ok=False, message="no frame yet"))
    with pytest.raises(CameraError, match="no frame yet"):
        await refused

    silent = asyncio.ensure_future(feature.request("status", timeout=5))
    await asyncio.sleep(0)
    await clock.run_for(5)
    with pytest.raises(CameraError, match="no reply in 5 s"):
        await silent

    gone = asyncio.ensure_future(feature.request("status"))
    await asyncio.sleep(0)
    feature._fail_pending("camera process ended before it answered")
    with pytest.raises(CameraError, match="ended before it answered"):
        await gone

    pipe.closed = True
    with pytest.raises(CameraError, match="no camera process is running"):
        await feature.request("status")
    assert feature._pending == {}


def test_a_stray_or_forged_reply_changes_nothing() -> None:
    asyncio.run(_test_a_stray_or_forged_reply_changes_nothing())


async def _test_a_stray_or_forged_reply_changes_nothing() -> None:
    feature, pipe, _ = feature_with_pipe()
    waiting = asyncio.ensure_future(feature.request("status"))
    await asyncio.sleep(0)
    req = pipe.lines[-1]["req"]
    for bad in (reply_line(req=req + 1, ok=True), reply_line(req="x", ok=True), reply_line(ok=True),
                reply_line(req=2**60, ok=True)):
        feature._event(bad)
    assert not waiting.done()
    feature._event(reply_line(req=req, ok=True, published=1))
    assert await waiting == {"published": 1}
