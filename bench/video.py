#!/usr/bin/env python3
"""The live monitor stream: first frame at a new viewer, glass-to-glass latency, server CPU by viewers.

The server is the real host process (``python -m doorphoned.camera.monitor --synthetic``, 640x480 15 fps
by default), each frame stamped with its capture instant (``hwsim.stamp``); viewers are OpenCV/FFmpeg
clients in this process's threads, over RTSP/TCP on loopback.

- first frame: ``VideoCapture(url)`` to the first decoded frame, a new viewer each time (targets < 1 s);
- glass-to-glass: decode instant minus the stamp read from the decoded frame, same clock (p50 < 250 ms);
- CPU: user+system time of the server process (/proc) over a window with 0, 1 and 4 viewers watching
  (one shared encoder: 4 viewers < 1.5 x one). The synthetic camera runs inside the server process, so
  the 0-viewer figure is the camera's own cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwsim import stamp  # noqa: E402

from tests.rtsp import MonitorHost, open_viewer  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_percent(pid: int, seconds: float) -> float:
    """Percent of one core the process used over the next ``seconds``."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def first_frame_ms(url: str) -> float:
    started = time.monotonic()
    capture = open_viewer(url)
    try:
        ok, _ = capture.read()
        if not ok:
            raise RuntimeError("no frame from a new viewer")
        return (time.monotonic() - started) * 1000
    finally:
        capture.release()


class Watcher(threading.Thread):
    """One viewer decoding continuously; keeps glass-to-glass ages while ``record`` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ages: list[int] = []
        self.frames = 0
        self.record = threading.Event()
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        capture = open_viewer(self.url)
        try:
            while not self.stop.is_set():
                ok, frame = capture.read()
                now = time.monotonic()
                if not ok:
                    break
                self.frames += 1
                self.ready.set()
                value = stamp.read(frame)
                if value is not None and self.record.is_set():
                    self.ages.append(stamp.age_ms(value, now))
        finally:
            capture.release()


def watch(url: str, count: int) -> list[Watcher]:
    watchers = [Watcher(url) for _ in range(count)]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        if not watcher.ready.wait(60):
            raise RuntimeError("a viewer got no frame in 60 s")
    return watchers


def stop(watchers: list[Watcher]) -> None:
    for watcher in watchers:
        watcher.stop.set()
    for watcher in watchers:
        watcher.join(30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--first-frames", type=int, default=10, help="new viewers timed")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--cpu-seconds", type=float, default=20, help="window per viewer count")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    host = MonitorHost(Path(tempfile.mkdtemp(prefix="bench-video-")), "--size", args.size, "--fps", str(args.fps),
                       "--max-viewers", "8")
    host.start()
    assert host.proc is not None
    pid, url = host.proc.pid, host.url()
    print(f"--- monitor stream {args.size} {args.fps} fps, x264 ultrafast/zerolatency, RTSP over TCP on loopback; "
          f"load average {os.getloadavg()[0]:.1f} at start (2-core machine shared: provisional)")
    try:
        cpu = {0: cpu_percent(pid, args.cpu_seconds)}
        times = [first_frame_ms(url) for _ in range(args.first_frames)]
        print(f"first frame at a new viewer ({len(times)}): p50 {statistics.median(times):.0f} ms  "
              f"max {max(times):.0f} ms")
        watchers = watch(url, 1)
        watchers[0].record.set()
        time.sleep(args.latency_seconds)
        watchers[0].record.clear()
        ages = watchers[0].ages
        print(f"glass-to-glass latency ({len(ages)} frames): p50 {statistics.median(ages):.0f} ms  "
              f"p99 {pct(ages, 0.99):.0f} ms")
        cpu[1] = cpu_percent(pid, args.cpu_seconds)
        stop(watchers)
        watchers = watch(url, 4)
        cpu[4] = cpu_percent(pid, args.cpu_seconds)
        stop(watchers)
    finally:
        host.stop()
    print(f"server CPU (% of one core, {args.cpu_seconds:.0f} s each): 0 viewers {cpu[0]:.1f}  1 viewer {cpu[1]:.1f}  "
          f"4 viewers {cpu[4]:.1f}  (4 / 1 = {cpu[4] / max(cpu[1], 0.1):.2f}x)")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
