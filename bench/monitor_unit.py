"""The monitor stream through the real unit: doorphoned --sim (camera on hw-sim's stamped scene, [monitor] on).

Figures (daemon + every child: the camera process hosts the RTSP server):
- CPU % of one core and RSS with the stream unwatched (targets < 3 %, < 200 MB), and the RSS the monitor adds
  (GStreamer is loaded in the camera process only when [monitor] is enabled: measured against a unit without);
- first frame at a new viewer (OpenCV/FFmpeg over RTSP/TCP; target < 1 s);
- glass-to-glass p50/p99 from hw-sim's stamp (drawn at capture in hw-sim, read by the viewer; target < 250 ms);
- CPU with 0/1/4 viewers at 640x480 15 fps (target: 4 viewers < 1.5 x 1 viewer: one shared encoder);
- keypad -> relay p50/p99 while 4 viewers watch (door 1 bistable; target p99 < 20 ms).

    python bench/monitor_unit.py --seconds 10 --probes 100
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.camera_idle import (
    TICKS,
    cpu_ticks,
    descendants,
    rss_mb,
)
from bench.video import first_frame_ms, pct, stop, watch
from tests.latency import KeypadProbe, percentile
from tests.procs import Daemon, HwSim, wait_for

PASSWORD = "bench-monitor-pw"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def camera(daemon: Daemon) -> dict:
    return next((f for f in daemon.ctl_json("status")["features"] if f["name"] == "camera"), {})


def usage(daemon: Daemon, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, RSS MB) of the daemon and its children over ``seconds``."""
    assert daemon.proc is not None
    pids = descendants(daemon.proc.pid)
    before = {pid: cpu_ticks(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    pids = descendants(daemon.proc.pid)
    cpu = sum(cpu_ticks(pid) - before.get(pid, 0) for pid in pids) / TICKS / elapsed * 100
    return cpu, sum(rss_mb(pid) for pid in pids)


def start(home: Path, sim: HwSim, name: str, monitor: bool, port: int) -> Daemon:
    env = {"DOORPHONED_DOORS_1_MODE": "bistable"}
    if monitor:
        env.update({"DOORPHONED_MONITOR_ENABLED": "true", "DOORPHONED_MONITOR_PORT": str(port),
                    "DOORPHONED_MONITOR_HOST": "127.0.0.1", "DOORPHONED_MONITOR_PUBLIC_HOST": "127.0.0.1",
                    "DOORPHONED_MONITOR_PASSWORD": PASSWORD})
    daemon = Daemon(home / name, sim, env=env)
    daemon.start()
    wait_for(lambda: camera(daemon).get("camera") == "ok", timeout=90, what="camera up")
    if monitor:
        wait_for(lambda: camera(daemon).get("monitor", {}).get("state") == "ok", timeout=90, what="monitor up")
    return daemon


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each CPU measurement")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--probes", type=int, default=100, help="keypad -> relay probes while 4 viewers watch")
    parser.add_argument("--first-frames", type=int, default=5, help="new viewers timed to their first frame")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-monitor-unit-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    sim.cmd("camera", "stamp", "on")
    try:
        plain = start(home, sim, "plain", False, 0)
        time.sleep(args.warmup)
        _, rss_plain = usage(plain, 1.0)
        plain.kill()
        port = free_port()
        daemon = start(home, sim, "monitor", True, port)
        time.sleep(args.warmup)
        cpu0, rss0 = usage(daemon, args.seconds)
        print(f"unwatched, monitor on: daemon + children CPU {cpu0:.2f} % of one core (target < 3 %), "
              f"RSS {rss0:.1f} MB (target < 200 MB); without [monitor] {rss_plain:.1f} MB: the monitor adds "
              f"{rss0 - rss_plain:.1f} MB")
        url = f"rtsp://installer:{PASSWORD}@127.0.0.1:{port}/live/ch00_0"
        firsts = [first_frame_ms(url) for _ in range(args.first_frames)]
        print(f"first frame at a new viewer ({len(firsts)}, stream otherwise unwatched): "
              f"p50 {pct(firsts, 0.5):.0f} ms  max {max(firsts):.0f} ms  (target < 1000 ms)")
        results = {}
        for count in (1, 4):
            watchers = watch(url, count)
            time.sleep(2)
            for w in watchers:
                w.record.set()
            cpu, rss = usage(daemon, args.seconds)
            ages = [a for w in watchers for a in w.ages]
            results[count] = cpu
            print(f"{count} viewer(s) 640x480 15 fps: CPU {cpu:.1f} %  RSS {rss:.1f} MB  glass-to-glass "
                  f"({len(ages)} frames) p50 {pct(ages, 0.5):.0f} ms  p99 {pct(ages, 0.99):.0f} ms (target p50 < 250)")
            if count == 4:
                user = daemon.ctl_json("user", "add", "Bench", "--doors", "1")
                daemon.ctl("pin", "set", user["id"], input="7351\n")
                probe = KeypadProbe(sim.socket, "7351")
                times = probe.run(args.probes)
                probe.close()
                print(f"keypad -> relay while 4 viewers watch ({len(times)}): p50 {percentile(times, 50):.2f} ms  "
                      f"p99 {percentile(times, 99):.2f} ms  (target p99 < 20 ms)")
            stop(watchers)
            wait_for(lambda: camera(daemon)["monitor"]["viewers"] == 0, timeout=60, what="viewers gone")
        print(f"CPU 4 viewers / 1 viewer: {results[4] / max(results[1], 0.01):.2f} (target < 1.5)")
        daemon.kill()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
