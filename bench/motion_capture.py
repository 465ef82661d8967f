#!/usr/bin/env python3
"""Motion detection and captures (issue 11): cost per frame, motion -> alert latency, capture latency,
retention with 10,000 captures kept.

- motion detection per 640x480 frame (downscale, grey, brightness matching, background, connected regions)
  on the test scenes (tests/scenes.py), and the same scenes through OpenCV's MOG2 for comparison: cost per
  frame and alerts per scene (the crossing must alert, ramp/step/noise must not);
- motion -> alert: frames published into a real FrameHub at 15 fps by a capture thread, a MotionWatch
  thread analysing them; from a frame's capture instant to the alert callback, and from the first frame
  showing the visitor to the alert (this includes ``confirm_frames``);
- capture: Frame -> JPEG file fsynced and renamed + log row committed (``synchronous=FULL``);
- retention: a capture taken while 10,000 are kept (each take deletes the oldest), and pruning 5,000.

The machine is shared: the figures are provisional, printed with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from doorphoned.camera import motion  # noqa: E402
from doorphoned.camera.captures import CaptureSettings, CaptureStore  # noqa: E402
from doorphoned.camera.hub import FrameHub  # noqa: E402
from doorphoned.camera.motion import MotionAlert, MotionDetector, MotionSettings, MotionWatch  # noqa: E402
from doorphoned.core.clock import FixedClock, SystemClock  # noqa: E402
from doorphoned.core.frames import Frame  # noqa: E402
from doorphoned.core.store import DB_NAME, Store  # noqa: E402
from tests import scenes  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f} ms  p99 {pct(values, 0.99):.2f} ms"


def scene_set(seconds: float) -> dict[str, list[np.ndarray]]:
    return {"crossing": scenes.crossing(seconds=seconds), "ramp 10 s": scenes.ramp(seconds=10),
            "light switched on": scenes.step(), "passing cloud": scenes.step(before=1.0, after=1.25, offset=0),
            "night noise": scenes.noisy(seconds=seconds)}


def detector_cost(sets: dict[str, list[np.ndarray]]) -> None:
    costs: list[float] = []
    alerts: dict[str, int] = {}
    for name, images in sets.items():
        clock = FixedClock(datetime(2026, 6, 3, 10, tzinfo=UTC))
        detector = MotionDetector(MotionSettings(cooldown_s=0, max_fps=scenes.FPS), clock)  # every frame
        alerts[name] = 0
        for frame in scenes.frames(images):
            started = time.perf_counter()
            alerts[name] += detector.feed(frame) is not None
            costs.append((time.perf_counter() - started) * 1000)
            clock.advance(1 / scenes.FPS)
    print(f"motion detection per frame, 640x480 -> 160x120, running average ({len(costs)} frames): "
          f"{figures(costs)}")
    share = statistics.mean(costs) * MotionSettings().max_fps / 1000 * 100
    print(f"  at the default max_fps {MotionSettings().max_fps:g}: {share:.1f} % of one core (mean cost x rate)")
    print("  alerting frames per scene (cooldown 0): " + ", ".join(f"{k} {v}" for k, v in alerts.items()))


def mog2_cost(sets: dict[str, list[np.ndarray]]) -> None:
    """The alternative background model on the same pipeline (downscale, matching, open, min area)."""
    costs: list[float] = []
    alerts: dict[str, int] = {}
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    for name, images in sets.items():
        mog = cv2.createBackgroundSubtractorMOG2(history=20, varThreshold=100, detectShadows=False)
        reference: np.ndarray | None = None
        alerts[name] = 0
        for image in images:
            started = time.perf_counter()
            grey = cv2.GaussianBlur(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (160, 120),
                                               interpolation=cv2.INTER_AREA), (5, 5), 0).astype(np.float32)
            reference = grey if reference is None else reference
            matched = np.clip(motion._match_brightness(grey, reference, 43.0), 0, 255).astype(np.uint8)
            primed = reference is grey
            mask = cv2.morphologyEx(mog.apply(matched, learningRate=1.0 if primed else 0.05), cv2.MORPH_OPEN,
                                    kernel)
            if primed:  # the first frame only seeds the model, as the running average's does
                costs.append((time.perf_counter() - started) * 1000)
                continue
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            if count > 1 and stats[1:, cv2.CC_STAT_AREA].max() >= 0.01 * mask.size:
                alerts[name] += 1
            costs.append((time.perf_counter() - started) * 1000)
    print(f"  for comparison, MOG2 (history 20, varThreshold 100) on the same frames: {figures(costs)}")
    print("  MOG2 alerting frames per scene: " + ", ".join(f"{k} {v}" for k, v in alerts.items()))


def alert_latency(crossings: int) -> None:
    """A capture thread publishes crossings at 15 fps into a FrameHub; a MotionWatch alerts."""
    hub = FrameHub()
    got: list[tuple[float, MotionAlert]] = []

    def on_motion(alert: MotionAlert) -> None:
        got.append((time.monotonic(), alert))

    settings = MotionSettings(cooldown_s=0)  # max_fps at its default: 15 fps in, at most 8 analysed
    watch = MotionWatch(hub, MotionDetector(settings, SystemClock()), on_motion)
    watch.start()
    mailbox = hub.subscribers[0]
    onsets: dict[int, float] = {}
    lead = int(1.5 * scenes.FPS)
    images = [(i, image) for _ in range(crossings)
              for i, image in enumerate(scenes.crossing(seconds=2.5, lead_in=1.5))]
    seq = 0
    next_at = time.monotonic()
    try:
        for index, image in images:
            seq += 1
            next_at += 1 / scenes.FPS
            time.sleep(max(0.0, next_at - time.monotonic()))
            image.flags.writeable = False
            now = time.monotonic()
            if index == lead + 1:  # the first frame with the visitor in view
                onsets[seq] = now
            hub.publish(Frame(seq, now, image))
        time.sleep(0.5)
    finally:
        watch.stop()
    per_alert = [(at - alert.frame_monotonic) * 1000 for at, alert in got]
    first: list[float] = []
    for onset_seq, onset in onsets.items():
        later = [at for at, alert in got if onset_seq <= alert.seq < onset_seq + lead + 40]
        if later:
            first.append((min(later) - onset) * 1000)
    dropped = mailbox.dropped
    print(f"motion frame captured -> alert callback, through a FrameHub, max_fps {settings.max_fps:g} "
          f"({len(per_alert)} alerts): "
          f"{figures(per_alert)}  (frames dropped by the motion mailbox: {dropped})")
    if first:
        print(f"visitor first in view -> alert callback ({len(first)} of {crossings} crossings): {figures(first)}"
              f"  (target for motion -> event < 500 ms end to end)")


def capture_latency(home: Path, count: int) -> None:
    store = Store(home / "cap" / DB_NAME)
    store.open()
    captures = CaptureStore(home / "cap", store, CaptureSettings(keep_count=max(count // 2, 1), min_free_bytes=0))
    captures.open()
    rng = np.random.default_rng(1)
    frames = [Frame(i, 0.0, scenes.render(scenes.porch(), rng=rng)) for i in range(min(count, 20))]
    total, encode = [], []
    for i in range(count):
        frame = frames[i % len(frames)]
        started = time.perf_counter()
        captures.take(frame, "manual", door=1)
        total.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        captures.encode(frame)
        encode.append((time.perf_counter() - started) * 1000)
    size = statistics.median(c.size for c in captures.recent())
    print(f"capture, frame -> JPEG file fsynced + log row committed ({count}, retention deleting): {figures(total)}"
          f"  (target < 200 ms end to end; JPEG encode alone {figures(encode)}; {size / 1024:.0f} kB each)")
    store.close()


def capture_async(home: Path, count: int) -> None:
    """take_async on a running loop, with a 1 ms probe measuring how long the loop was held meanwhile."""
    store = Store(home / "async" / DB_NAME)
    store.open()
    captures = CaptureStore(home / "async", store, CaptureSettings(keep_count=max(count // 2, 1), min_free_bytes=0))
    captures.open()
    frame = Frame(1, 0.0, scenes.render(scenes.porch()))

    async def run() -> tuple[list[float], list[float], list[float]]:
        lags: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - started) * 1000 - 1)

        task = asyncio.create_task(probe())
        await asyncio.sleep(2.0)  # the same probe with nothing to do: what the machine's load alone costs
        idle, lags[:] = list(lags), []
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await captures.take_async(frame, "call", door=1)
            times.append((time.perf_counter() - started) * 1000)
        stop.set()
        await task
        return times, lags, idle

    times, lags, idle = asyncio.run(run())
    print(f"capture on the loop with take_async ({count}): {figures(times)}; loop held meanwhile "
          f"(1 ms probe, {len(lags)} wake-ups): p99 {pct(lags, 0.99):.2f} ms  max {max(lags):.2f} ms "
          f"(same probe idle, 2 s: p99 {pct(idle, 0.99):.2f} ms  max {max(idle):.2f} ms)")
    store.close()


def retention(home: Path, kept: int, takes: int) -> None:
    """Fill ``kept`` captures (set-up writes rows and small files directly, without fsync), then take
    captures that each push the oldest out, then prune half in one pass."""
    state = home / "ret"
    store = Store(state / DB_NAME)
    store.open()
    captures = CaptureStore(state, store, CaptureSettings(keep_count=kept, min_free_bytes=0))
    captures.open()
    small = captures.encode(Frame(0, 0.0, np.full((48, 64, 3), 90, np.uint8)))
    now = datetime.now(UTC)
    rows = []
    for i in range(kept):
        name = f"{now:%Y%m%dT%H%M%S}-{i:08x}.jpg"
        (captures.dir / name).write_bytes(small.jpeg)
        os.chmod(captures.dir / name, 0o600)
        rows.append((now.isoformat(), "motion", 1, None, len(small.jpeg), 64, 48, name))
    store.db.execute("BEGIN")
    store.db.executemany("INSERT INTO captures (ts, trigger, door, log_id, size, width, height, file)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    store.db.execute("COMMIT")
    times = []
    frame = Frame(1, 0.0, scenes.render(scenes.porch()))
    for _ in range(takes):
        started = time.perf_counter()
        captures.take(frame, "motion")
        times.append((time.perf_counter() - started) * 1000)
    assert captures.stats()["count"] == kept
    captures.settings = CaptureSettings(keep_count=kept // 2, min_free_bytes=0)
    started = time.perf_counter()
    removed = captures.apply_retention()
    pruned = time.perf_counter() - started
    started = time.perf_counter()
    swept = captures.sweep()
    sweep_s = time.perf_counter() - started
    print(f"retention with {kept:,} captures kept: a capture that pushes the oldest out ({takes}): {figures(times)};"
          f" pruning {removed:,} at once: {pruned:.2f} s; start-up sweep of {kept // 2:,}: {sweep_s:.2f} s "
          f"(removed {swept['rows'] + swept['files']})")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the crossing and noise scenes")
    parser.add_argument("--crossings", type=int, default=12, help="visitors crossing for the latency figures")
    parser.add_argument("--captures", type=int, default=200)
    parser.add_argument("--kept", type=int, default=10_000)
    parser.add_argument("--takes", type=int, default=100)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())} (2 cores, shared: provisional)")
    sets = scene_set(args.seconds)
    detector_cost(sets)
    mog2_cost(sets)
    alert_latency(args.crossings)
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as home:
        capture_latency(Path(home), args.captures)
        capture_async(Path(home), args.captures)
        retention(Path(home), args.kept, args.takes)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
