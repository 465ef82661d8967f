"""Readers' time on the manual clock: NFC and QR presence windows, and the retry backoff of a reader
whose device fails. The production reader classes, with a stand-in gate that records presentations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from doorphoned.camera.config import CameraConfig
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock
from doorphoned.core.events import QrCodesInView
from doorphoned.core.presentations import Credential
from doorphoned.readers.base import BACKOFF_FIRST, ReaderFeature
from doorphoned.readers.config import NfcConfig
from doorphoned.readers.nfc import NfcReader
from doorphoned.readers.qr import QrReader

START = datetime(2026, 11, 23, 12, tzinfo=UTC)


class Gate:
    def __init__(self) -> None:
        self.presented: list[Credential] = []

    async def present(self, credential: Credential, doors: Sequence[int]) -> None:
        self.presented.append(credential)


def test_a_card_counts_again_only_after_it_was_out_of_the_field_for_the_repeat_delay():
    async def scenario() -> None:
        clock, gate = FixedClock(START), Gate()
        reader = NfcReader(NfcConfig(device="usb", repeat_delay=2.0), gate, clock)  # type: ignore[arg-type]
        for _ in range(30):  # held on the reader, read every second for half a minute
            await reader._uid("04A1B2C3")
            clock.advance(1)
        assert len(gate.presented) == 1 and reader.reader_status()["cards_in_field"] == 1
        clock.advance(1.0)  # taken away: 2 s since the last read
        assert reader.reader_status()["cards_in_field"] == 0
        await reader._uid("04a1b2c3")
        assert len(gate.presented) == 2

    asyncio.run(scenario())


def test_a_qr_code_that_drops_out_briefly_is_one_presentation():
    async def scenario() -> None:
        clock, gate = FixedClock(START), Gate()
        reader = QrReader(CameraConfig(source="0", qr_cooldown=1.0), gate, clock, EventBus())  # type: ignore[arg-type]
        shown, gone = frozenset({"TK:1"}), frozenset[str]()
        await reader._seen(shown)
        clock.advance(5)
        await reader._seen(gone)  # glare for 0.9 s
        clock.advance(0.9)
        await reader._seen(shown)
        assert len(gate.presented) == 1
        await reader._seen(gone)
        clock.advance(0.99)
        assert reader.reader_status()["qr_in_view"] == 1
        clock.advance(0.01)
        assert reader.reader_status()["qr_in_view"] == 0
        await reader._seen(shown)
        assert len(gate.presented) == 2

    asyncio.run(scenario())


class Broken(ReaderFeature):
    name = "broken"

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(Gate(), [1], clock)  # type: ignore[arg-type]
        self.sessions: list[float] = []

    async def run_session(self) -> None:
        self.sessions.append(self.clock.monotonic())
        raise ConnectionError("no such device")


def test_a_failing_device_is_retried_with_a_doubling_delay_on_the_clock_and_nothing_is_left_after_stop():
    async def scenario() -> None:
        clock = FixedClock(START)
        reader = Broken(clock)
        await reader.start()
        await clock.run_for(0)
        assert reader.sessions == [1000.0] and reader.state == "fault"
        await clock.run_for(BACKOFF_FIRST + 2 * BACKOFF_FIRST + 4 * BACKOFF_FIRST)
        assert reader.sessions == [1000.0, 1000.5, 1001.5, 1003.5]
        await reader.stop()
        assert reader.owned() == ([], []) and clock.pending() == [] and reader.state == "stopped"

    asyncio.run(scenario())


def test_a_qr_decision_is_timed_from_the_frame_stamp_and_only_when_a_presentation_was_made():
    async def scenario() -> None:
        reader = QrReader(CameraConfig(source="0"), Gate(), FixedClock(START), EventBus())  # type: ignore[arg-type]
        shown = frozenset({"TK:1"})
        await reader._seen(shown)  # no stamp (an older camera process): a decision, no figure
        await reader._seen(frozenset())
        await reader._seen(shown, stamped(0.25))  # the same stay (cooldown): no presentation, no figure
        assert reader.reader_status()["qr_decision_ms"]["count"] == 0
        await reader._seen(frozenset({"TK:2"}), stamped(0.25))
        timed = reader.reader_status()["qr_decision_ms"]
        assert timed["count"] == 1 and 250 <= timed["last"] < 60_000, timed

    asyncio.run(scenario())


def stamped(age: float, sent: float | None = None, read: float | None = None) -> QrCodesInView:
    """A view event whose frame is ``age`` s old, sent and read ``sent`` / ``read`` s ago."""
    now = time.monotonic()
    return QrCodesInView(START, frozenset(), frame_at=now - age, sent_at=None if sent is None else now - sent,
                         read_at=None if read is None else now - read)


def test_a_qr_decision_splits_into_the_camera_the_pipe_and_the_daemon_parts():
    async def scenario() -> None:
        reader = QrReader(CameraConfig(source="0"), Gate(), FixedClock(START), EventBus())  # type: ignore[arg-type]
        await reader._seen(frozenset({"TK:1"}), stamped(0.9, sent=0.6, read=0.5))
        await reader._seen(frozenset({"TK:2"}), stamped(0.9, sent=0.4, read=0.6))  # read before sent: no parts
        await reader._seen(frozenset({"TK:3"}), stamped(0.9))  # an older camera process: no sent_at
        status = reader.reader_status()
        parts = status["qr_decision_parts_ms"]
        assert status["qr_decision_ms"]["count"] == 3
        assert {part: parts[part]["count"] for part in parts} == {"camera": 1, "pipe": 1, "daemon": 1}
        assert 300 <= parts["camera"]["last"] < 301 and 100 <= parts["pipe"]["last"] < 101, parts
        assert 500 <= parts["daemon"]["last"] < 60_000, parts

    asyncio.run(scenario())
