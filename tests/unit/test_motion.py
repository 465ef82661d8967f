"""Motion detection with real OpenCV on synthetic 640x480 scenes (tests/scenes.py) and a clock the test moves.

A visitor crossing alerts once per cooldown; a 10 s brightness ramp, lights switched on at once, heavy
sensor noise and movement outside every zone never alert; the arming schedule is read in Europe/Berlin on
DST days; MotionWatch does the same through a real FrameHub and its thread.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from doorphoned.camera.hub import FrameHub
from doorphoned.camera.motion import (
    MotionAlert,
    MotionDetector,
    MotionFrameError,
    MotionSettings,
    MotionSettingsError,
    MotionWatch,
    Zone,
)
from doorphoned.core.clock import FixedClock
from doorphoned.core.frames import Frame
from tests import scenes
from tests.procs import wait_for

NOON = datetime(2026, 6, 3, 10, 0, tzinfo=UTC)  # a Wednesday, 12:00 in Berlin
SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # Berlin: 02:00 CET -> 03:00 CEST
AUTUMN = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # Berlin: 03:00 CEST -> 02:00 CET


def run(images: list[np.ndarray], settings: MotionSettings, start: datetime = NOON,
        ) -> tuple[list[MotionAlert], MotionDetector]:
    """Feed ``images`` at 15 fps, the clock moving one frame interval per frame."""
    clock = FixedClock(start)
    detector = MotionDetector(settings, clock)
    alerts = []
    for frame in scenes.frames(images):
        alert = detector.feed(frame)
        if alert is not None:
            alerts.append(alert)
        clock.advance(1 / scenes.FPS)
    return alerts, detector


def test_a_visitor_crossing_alerts_once_per_cooldown_with_area_box_and_zone() -> None:
    alerts, detector = run(scenes.crossing(seconds=4), MotionSettings(cooldown_s=30))
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.zone is None
    assert 0.01 <= alert.area <= 0.05  # the block is 12 % x 30 % of the picture, partly in view
    x0, y0, x1, y1 = alert.bbox
    assert 0.0 <= x0 < x1 <= 0.3 and 0.4 <= y0 < y1 <= 0.8  # entering at the left, at its height
    assert alert.seq > 15  # not before the visitor is in the picture (1 s of empty porch first)
    assert 30 <= detector.analysed <= 40  # 75 frames at 15 fps, analysed at most 8 a second


def test_motion_that_goes_on_alerts_again_after_each_cooldown() -> None:
    alerts, _ = run(scenes.crossing(seconds=6), MotionSettings(cooldown_s=1.5))
    assert 3 <= len(alerts) <= 5
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(alerts)]
    assert all(gap >= 1.5 for gap in gaps), gaps
    xs = [a.bbox[0] for a in alerts]
    assert xs == sorted(xs)  # the box follows the visitor across the picture


@pytest.mark.parametrize("name", ["ramp", "step", "small_step", "noise", "still"])
def test_lighting_changes_and_noise_never_alert(name: str) -> None:
    """``small_step`` (a cloud passing: +25 % at once) changes the bright wall by more than the threshold and
    the dark door by less, so it is neither below the threshold nor a change of the whole picture: only the
    brightness matching keeps it from alerting."""
    images = {"ramp": lambda: scenes.ramp(seconds=10), "step": scenes.step,
              "small_step": lambda: scenes.step(before=1.0, after=1.25, offset=0),
              "noise": lambda: scenes.noisy(sigma=14), "still": lambda: scenes.still(4)}[name]()
    alerts, detector = run(images, MotionSettings(cooldown_s=0, sensitivity=70, max_fps=15))
    assert alerts == []
    assert detector.analysed >= len(images) - 2  # every frame was looked at


def test_the_brightness_step_is_recognised_as_lighting_without_matching_it_would_alert() -> None:
    """Control: without brightness matching the same step would have been a change everywhere."""
    images = scenes.step(before=0.5, after=1.3, offset=30)
    a, b = images[0].astype(np.float32), images[-1].astype(np.float32)
    assert float(np.mean(np.abs(a - b))) > 60  # the raw pictures differ a lot
    alerts, _ = run(images, MotionSettings(cooldown_s=0, sensitivity=100))
    assert alerts == []


def test_the_visitor_is_still_seen_while_the_light_ramps() -> None:
    scene = scenes.porch()
    rng = np.random.default_rng(9)
    images = [scenes.render(scene, gain=0.6 + 0.004 * i, rng=rng) for i in range(20)]
    images += [scenes.render(scenes.with_object(scene, 0.3 + 0.01 * i, 0.4), gain=0.68 + 0.004 * i, rng=rng)
               for i in range(30)]
    alerts, _ = run(images, MotionSettings(cooldown_s=60))
    assert len(alerts) == 1


def test_movement_outside_every_zone_never_alerts_and_inside_one_names_it() -> None:
    zones = (Zone("mat", 0.0, 0.6, 1.0, 1.0), Zone("path", 0.8, 0.0, 1.0, 0.5))
    top_strip = scenes.crossing(seconds=4, y=0.0, h=0.2, w=0.1)  # crosses y 0-0.2 from left to x ~0.8
    alerts, _ = run(top_strip[:60], MotionSettings(zones=zones, cooldown_s=0))
    assert alerts == []
    low = scenes.crossing(seconds=4, y=0.65, h=0.3)
    alerts, _ = run(low, MotionSettings(zones=zones, cooldown_s=60))
    assert [a.zone for a in alerts] == ["mat"]


def test_zones_survive_a_resolution_change() -> None:
    """Normalised zones: the same scene at 320x240 alerts in the same zone, and the detector re-learns the
    background when the frame size changes instead of comparing two sizes."""
    small = [np.ascontiguousarray(im[::2, ::2]) for im in scenes.crossing(seconds=4, y=0.65, h=0.3)]
    settings = MotionSettings(zones=(Zone("mat", 0.0, 0.6, 1.0, 1.0),), cooldown_s=60)
    big = scenes.crossing(seconds=4, y=0.65, h=0.3)
    alerts, _ = run(big[:10] + small, settings)
    assert [a.zone for a in alerts] == ["mat"]


def test_min_area_keeps_a_small_thing_from_alerting() -> None:
    tiny = scenes.crossing(seconds=3, w=0.03, h=0.05)  # 0.15 % of the picture: a moth, a leaf
    assert run(tiny, MotionSettings(min_area=0.01, cooldown_s=0))[0] == []
    assert run(tiny, MotionSettings(min_area=0.0005, cooldown_s=0, sensitivity=80))[0] != []


def test_sensitivity_decides_how_faint_a_change_counts() -> None:
    scene = scenes.porch()
    rng = np.random.default_rng(3)
    faint = [scenes.render(scene, rng=rng) for _ in range(15)]
    faint += [scenes.render(scenes.with_object(scene, 0.2 + 0.01 * i, 0.3, level=95), rng=rng) for i in range(30)]
    assert run(faint, MotionSettings(sensitivity=1, cooldown_s=0))[0] == []
    assert run(faint, MotionSettings(sensitivity=95, cooldown_s=0))[0] != []


@pytest.mark.parametrize(("start", "hours", "armed"), [
    # Berlin evening schedule 18:00-06:00 every day. SPRING + n h is 03:00 CEST + n (01:00 UTC + n): +15 h is
    # 18:00 CEST (a fixed CET offset would say 17:00, disarmed). AUTUMN + n h is 02:00 CET + n: +3 h is
    # 05:00 CET (a fixed CEST offset would say 06:00, disarmed).
    (SPRING, 0, True), (SPRING, 2, True), (SPRING, 3, False), (SPRING, 14, False), (SPRING, 15, True),
    (AUTUMN, 0, True), (AUTUMN, 3, True), (AUTUMN, 4, False), (AUTUMN, 15, False), (AUTUMN, 16, True),
])
def test_the_arming_schedule_is_read_in_the_site_zone_on_dst_days(start: datetime, hours: int,
                                                                  armed: bool) -> None:
    settings = MotionSettings(schedule=("daily 18:00-06:00",), timezone="Europe/Berlin", cooldown_s=60)
    alerts, detector = run(scenes.crossing(seconds=3), settings, start=start + timedelta(hours=hours))
    assert bool(alerts) is armed
    assert (detector.analysed > 0) is armed  # disarmed: nothing is analysed at all


def test_disarming_drops_the_background_so_rearming_does_not_alert_on_what_changed_meanwhile() -> None:
    settings = MotionSettings(schedule=("daily 12:00-13:00",), timezone="UTC", cooldown_s=0)
    clock = FixedClock(datetime(2026, 6, 3, 12, 59, 58, tzinfo=UTC))
    detector = MotionDetector(settings, clock)
    scene, moved = scenes.porch(), scenes.with_object(scenes.porch(), 0.3, 0.4)
    rng = np.random.default_rng(1)
    for i in range(20):  # empty porch while armed, then disarmed at 13:00
        assert detector.feed(Frame(i, i, scenes.render(scene, rng=rng))) is None
        clock.advance(0.2)
    assert not detector.armed()
    clock.advance(23 * 3600)  # next day 12:00+: a parcel now stands where the porch was empty
    assert detector.armed()
    results = [detector.feed(Frame(100 + i, 100 + i, scenes.render(moved, rng=rng))) for i in range(10)]
    assert results == [None] * 10


def test_a_frame_that_is_not_a_picture_is_refused_clearly() -> None:
    detector = MotionDetector(MotionSettings(), FixedClock(NOON))
    for image in (None, np.zeros((4, 4, 3), np.uint8), np.zeros((100, 100, 3), np.float32),
                  np.zeros((100, 100, 4), np.uint8), "pixels", np.zeros((10, 9000), np.uint8)):
        with pytest.raises(MotionFrameError):
            detector.feed(Frame(1, 0.0, image))
    assert detector.feed(Frame(2, 0.0, np.zeros((120, 160), np.uint8))) is None  # grey is fine


def test_settings_from_config_are_checked_by_key() -> None:
    settings = MotionSettings.from_dict({"sensitivity": 60, "min_area": 0.02, "cooldown_s": 10,
                                         "zones": [{"name": "mat", "rect": [0, 0.6, 1, 1]}],
                                         "schedule": ["mon-fri 18:00-07:00"], "timezone": "Europe/Berlin"})
    assert settings.zones == (Zone("mat", 0.0, 0.6, 1.0, 1.0),) and settings.cooldown_s == 10.0
    for bad, words in [({"zones": [{"rect": [0.5, 0, 0.2, 1]}]}, "x0 < x1"),
                       ({"zones": [{"rect": [0, 0, float("nan"), 1]}]}, "finite"),
                       ({"zones": [{"rect": [0, 0, 1.5, 1]}]}, "within 0..1"),
                       ({"zones": [{"rect": [0, 0, 1, 1]}] * 17}, "at most 16"),
                       ({"sensitivity": True}, "integer"), ({"sensitivity": 0}, "1..100"),
                       ({"cooldown_s": float("inf")}, "finite"), ({"sensitivity": 10**400}, "1..100"),
                       ({"analysis_width": -(10**400)}, "32..640"), ({"timezone": "Mars/Olympus"}, "unknown timezone"),
                       ({"schedule": ["someday 25:00-26:00"]}, "schedule"), ({"colour": 1}, "unknown motion setting"),
                       ({"zones": [{"name": "\u202emat", "rect": [0, 0, 1, 1]}]}, "zone name")]:
        with pytest.raises(MotionSettingsError, match=words):
            MotionSettings.from_dict(bad)


def test_the_watch_alerts_through_a_real_hub_and_survives_bad_frames_and_a_failing_handler() -> None:
    hub = FrameHub()
    clock = FixedClock(NOON)
    got: list[MotionAlert] = []
    calls = threading.Event()

    def on_motion(alert: MotionAlert) -> None:
        got.append(alert)
        calls.set()
        if len(got) == 1:
            raise RuntimeError("the handler broke")  # logged; the watch goes on

    watch = MotionWatch(hub, MotionDetector(MotionSettings(cooldown_s=0), clock), on_motion)
    watch.start()
    watch.start()  # idempotent
    try:
        hub.publish(Frame(0, 0.0, np.zeros((4, 4), np.uint8)))  # refused frame: counted, not fatal
        wait_for(lambda: watch.errors == 1, what="the refused frame")
        for frame in scenes.frames(scenes.crossing(seconds=3)):
            mailbox = hub.subscribers[0]
            hub.publish(frame)
            wait_for(lambda m=mailbox: m._frame is None, what=f"frame {frame.seq} taken")
        wait_for(lambda: len(got) >= 2, what="two alerts")
        assert watch.running and watch.errors == 2  # the bad frame and the handler's exception
    finally:
        watch.stop()
        watch.stop()
    assert not watch.running and hub.subscribers == ()


def test_every_visitor_in_a_row_alerts_the_background_keeps_its_contrast() -> None:
    """Regression (found by bench/motion_capture.py): the background was learnt from brightness-matched
    frames, whose contrast each visitor and the sensor noise shrank a little; after three visitors the
    fourth raised no alert. Now six in a row each alert, and the background's contrast stays put."""
    one = scenes.crossing(seconds=2.5, lead_in=1.5)
    clock = FixedClock(NOON)
    detector = MotionDetector(MotionSettings(cooldown_s=0), clock)
    alerting: set[int] = set()
    for frame in scenes.frames(one * 6):
        if detector.feed(frame) is not None:
            alerting.add((frame.seq - 1) // len(one))
        clock.advance(1 / scenes.FPS)
        if frame.seq == len(one):
            contrast = float(np.std(detector._model.reference))
    assert alerting == set(range(6))
    assert float(np.std(detector._model.reference)) > 0.9 * contrast


def test_at_most_max_fps_frames_a_second_are_analysed_by_their_capture_time() -> None:
    settings = MotionSettings(max_fps=5)
    _, detector = run(scenes.still(2), settings)  # 30 frames at 15 fps
    assert detector.analysed == 10
    assert run(scenes.crossing(seconds=4), MotionSettings(max_fps=5, cooldown_s=60))[0] != []  # still sees it


def test_the_watch_outlives_an_unforeseen_analysis_error(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FrameHub()
    detector = MotionDetector(MotionSettings(max_fps=60), FixedClock(NOON))
    prepare = detector._prepare

    def broken_once(image: np.ndarray) -> np.ndarray:
        if not getattr(broken_once, "done", False):
            broken_once.done = True  # type: ignore[attr-defined]
            raise cv2.error("OpenCV(5.0) resize: something nobody foresaw")
        return prepare(image)

    monkeypatch.setattr(detector, "_prepare", broken_once)
    watch = MotionWatch(hub, detector, lambda alert: None)
    watch.start()
    try:
        for frame in scenes.frames(scenes.still(0.4)):
            hub.publish(frame)
            wait_for(lambda: hub.subscribers[0]._frame is None, what="frame taken")
        wait_for(lambda: detector.analysed >= 1, what="frames analysed after the error")
        assert watch.running and watch.errors == 1
    finally:
        watch.stop()
