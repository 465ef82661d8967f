"""The monitor's producer and appsrc's timestamps (issue 11): real GStreamer elements, no RTSP.

``appsrc do-timestamp=true`` stamps a frame when it is pushed, with the clock's time minus the element's base
time. While a live media goes to PLAYING there is a moment when appsrc has the pipeline's clock but not yet
its base time: a frame pushed then carries the clock's absolute time, far ahead of every later frame. The
first test shows that moment with a direct push; the second that the producer holds frames until appsrc is
PLAYING, so none of its frames is stamped that way.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from doorphoned.camera import monitor
from doorphoned.camera.hub import FrameHub
from doorphoned.core.frames import Frame
from tests.procs import wait_for

SETTINGS = monitor.MonitorSettings(width=64, height=48, fps=15)
CAPS = "video/x-raw,format=BGR,width=64,height=48,framerate=15/1"


def _pipeline(gst: Any) -> tuple[Any, Any, list[int]]:
    """appsrc ! fakesink in PAUSED with the system clock handed to appsrc and no base time yet (the moment
    between the pipeline distributing its clock and the bin reaching the source); the PTS that reach the sink."""
    pipeline = gst.parse_launch(f"appsrc name=src is-live=true format=time do-timestamp=true caps={CAPS} "
                                "! fakesink name=sink sync=false async=false")
    stamps: list[int] = []

    def probe(_pad: Any, info: Any) -> Any:
        stamps.append(info.get_buffer().pts)
        return gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(gst.PadProbeType.BUFFER, probe)
    pipeline.set_state(gst.State.PAUSED)
    appsrc = pipeline.get_by_name("src")
    appsrc.set_clock(gst.SystemClock.obtain())
    return pipeline, appsrc, stamps


def _play(gst: Any, pipeline: Any) -> None:
    pipeline.set_state(gst.State.PLAYING)
    result = pipeline.get_state(30 * gst.SECOND)
    assert result[1] == gst.State.PLAYING, result


def _running_time(pipeline: Any) -> int:
    return int(pipeline.get_clock().get_time() - pipeline.get_base_time())


def test_a_frame_pushed_before_appsrc_plays_is_stamped_with_the_absolute_clock_time():
    gst = monitor._gi().gst
    pipeline, appsrc, stamps = _pipeline(gst)
    try:
        appsrc.emit("push-buffer", gst.Buffer.new_wrapped(bytes(64 * 48 * 3)))
        _play(gst, pipeline)
        wait_for(lambda: stamps, timeout=30, what="the frame at the sink")
        assert stamps[0] > _running_time(pipeline)  # ahead of the whole stream so far: a syncing sink waits
    finally:
        pipeline.set_state(gst.State.NULL)


def test_the_producer_holds_frames_until_appsrc_plays_so_each_is_stamped_with_its_running_time():
    gst = monitor._gi().gst
    pipeline, appsrc, stamps = _pipeline(gst)
    hub = FrameHub()
    producer = monitor.Producer(hub, appsrc, SETTINGS, gst)
    producer.start()
    image = np.zeros((48, 64, 3), np.uint8)
    try:
        for seq in range(3):  # frames arriving while appsrc has a clock but is not PLAYING
            _publish(hub, seq, image)
        wait_for(lambda: producer.held + producer.pushed == 3, timeout=30, what="three frames handled")
        held = producer.held
        _play(gst, pipeline)
        for seq in range(3, 6):
            _publish(hub, seq, image)
        wait_for(lambda: len(stamps) >= 3, timeout=30, what="three frames at the sink")
        now = _running_time(pipeline)
    finally:
        producer.stop()
        pipeline.set_state(gst.State.NULL)
    assert held == 3
    assert all(0 <= pts <= now for pts in stamps), (stamps, now)


def test_the_producer_hands_a_frame_to_the_encoder_only_once_qr_decoding_is_done_with_it(monkeypatch):
    """The door path first: the encoder does not take the CPU at the instant QR decoding needs it."""
    gst = monitor._gi().gst
    pipeline, appsrc, stamps = _pipeline(gst)
    _play(gst, pipeline)
    hub = FrameHub()
    hub.subscribe("qr")
    monkeypatch.setattr(monitor, "DOOR_PATH_FIRST", 60.0)
    producer = monitor.Producer(hub, appsrc, SETTINGS, gst)
    producer.start()
    image = np.zeros((48, 64, 3), np.uint8)
    try:
        hub.publish(Frame(1, 1 / 15, image))
        wait_for(lambda: all(m._frame is None for m in hub.subscribers if m.name == "monitor"), timeout=30,
                 what="the producer took the frame")
        time.sleep(0.3)
        assert producer.pushed == 0 and not stamps  # QR decoding has not finished frame 1
        hub.finished("qr", 1)
        wait_for(lambda: stamps, timeout=30, what="the frame at the sink")
        assert producer.pushed == 1
        monkeypatch.setattr(monitor, "DOOR_PATH_FIRST", 0.01)  # a decoder that never finishes costs 10 ms a frame
        hub.publish(Frame(2, 2 / 15, image))
        wait_for(lambda: producer.pushed == 2, timeout=30, what="frame 2 pushed without QR decoding")
        assert hub.waits_timed_out >= 1
    finally:
        producer.stop()
        pipeline.set_state(gst.State.NULL)


def _publish(hub: FrameHub, seq: int, image: Any) -> None:
    """One frame at the stream's rate (capture instants 1/15 s apart), once the producer took the last one."""
    wait_for(lambda: all(m._frame is None for m in hub.subscribers), timeout=30, what="the last frame taken")
    hub.publish(Frame(seq, seq / 15, image))
