"""What an idle unit with its camera on costs, and how fast a QR code shown after the idle opens.

Starts hw-sim and ``doorphoned --sim`` (the embedded default: camera on, hw-sim's MJPEG stream, nobody
watching), waits until the camera is up and a warm-up has passed, then reads ``/proc/<pid>/stat`` of the
daemon and every descendant (the camera process) at the start and the end of ``--seconds``: CPU % of one
core = (utime + stime) ticks / CLK_TCK / elapsed. RSS is the sum of ``VmRSS`` of the same processes at the
end. ``--noise`` makes every frame differ, as a real sensor's do (hw-sim's noise mode). Then, after that
idle, a temp key's QR code is shown ``--qr`` times (each after ``--gap`` seconds of blank scene) and the
time from the show command to the relay energising is printed (target < 500 ms).

    python bench/camera_idle.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.procs import Daemon, HwSim, wait_for

TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc/*/stat's ppid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0)


def camera_status(daemon: Daemon) -> dict:
    features = daemon.ctl_json("status")["features"]
    return next((f for f in features if f["name"] == "camera"), {})


def measure_idle(daemon: Daemon, seconds: float) -> None:
    assert daemon.proc is not None
    pids = descendants(daemon.proc.pid)
    cam_before = camera_status(daemon)
    before = {pid: cpu_ticks(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    pids = descendants(daemon.proc.pid)
    used = {pid: cpu_ticks(pid) - before.get(pid, 0) for pid in pids}
    total = sum(used.values()) / TICKS / elapsed * 100
    rss = {pid: rss_mb(pid) for pid in pids}
    print(f"idle {elapsed:.0f} s, camera on, stream unwatched: daemon + {len(pids) - 1} children "
          f"CPU {total:.2f} % of one core  (target < 3 %)")
    for pid in pids:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        print(f"  pid {pid}: CPU {used[pid] / TICKS / elapsed * 100:.2f} %  RSS {rss[pid]:.1f} MB  {cmd[-60:]}")
    print(f"RSS daemon + children: {sum(rss.values()):.1f} MB  (target < 200 MB)")
    cam = camera_status(daemon)
    if "published" in cam:  # this branch's camera feature: what the change detector let through
        print(f"camera ({cam['capture']}): {cam['frames'] - cam_before['frames']} frames received, "
              f"{cam['published'] - cam_before['published']} fully decoded for the consumers, "
              f"{cam['changes'] - cam_before['changes']} changes detected (stats every 5 s)")


def qr_times(daemon: Daemon, sim: HwSim, shows: int, gap: float, relay: int = 1,
             decisions: list[float] | None = None, parts: dict[str, list[float]] | None = None) -> list[float]:
    """QR code shown -> ``relay`` energised, ``shows`` times (each after ``gap`` s of blank scene), in ms.

    With ``decisions``, each show's "QR frame -> decision" as the unit timed it (the QR reader's
    ``qr_decision_ms``: the deciding frame's arrival in the camera process to the access decision) is
    appended to it: no show-to-frame wait, no bench clock in that figure; with ``parts`` too, that time's parts
    (``qr_decision_parts_ms``: camera process, pipe, daemon) are appended to ``parts[name]``. A temp key opens
    at most 100 times on a unit: more shows use one key per 100."""
    times: list[float] = []
    events = sim.watch()
    control, replies = sim.control()
    for chunk in range(0, max(1, shows), KEY_USES):
        key = qr_key(daemon, relay, min(KEY_USES, max(1, shows) - chunk))
        for _ in range(min(KEY_USES, max(1, shows) - chunk)):
            show_clear(control, replies, None)
            time.sleep(gap)  # blank scene: the camera goes idle again (unless a viewer holds it)
            timed = decision_count(daemon) if decisions is not None else 0
            started = time.perf_counter()
            show_clear(control, replies, key)
            while True:
                event = json.loads(events.readline())
                if event.get("ev") == "relay" and event["relay"] == relay and event["energised"]:
                    times.append((time.perf_counter() - started) * 1000)
                    break
            if decisions is not None:
                decided = next_decision(daemon, timed)
                decisions.append(float(decided["last"]))
                for name, window in decided["parts"].items() if parts is not None else ():
                    parts.setdefault(name, []).append(float(window["last"]))
    show_clear(control, replies, None)
    return sorted(times)


KEY_USES = 100  # a temp key's most uses on a unit (each_door_counts 1-100)


def qr_key(daemon: Daemon, relay: int, uses: int) -> str:
    """A fresh temp key's QR text for ``relay``, good for ``uses`` opens."""
    end = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    key = daemon.ctl_json("tempkey", "create", "--name", "Bench QR", "--doors", str(relay), "--repeat", "never",
                          "--end", end, "--count", str(uses))
    return str(key["qr"])


def show_clear(control: Any, replies: Any, qr: str | None) -> None:
    """Show ``qr`` on hw-sim's camera (None: the blank scene) and wait for hw-sim's reply."""
    op = {"op": "camera", "action": "clear"} if qr is None else {"op": "camera", "action": "qr", "text": qr}
    control.sendall(json.dumps(op).encode() + b"\n")
    replies.readline()


def qr_decision(daemon: Daemon) -> dict:
    """The QR reader's own "frame -> decision" window (count, p50, p99, last; ms), with its parts' windows
    under ``parts`` (empty from a unit without them)."""
    features = daemon.ctl_json("status")["features"]
    qr = next(f for f in features if f["name"] == "qr")
    return {**qr["qr_decision_ms"], "parts": qr.get("qr_decision_parts_ms", {})}


def decision_count(daemon: Daemon) -> int:
    return int(qr_decision(daemon)["count"])


def next_decision(daemon: Daemon, count: int) -> dict:
    """The reader's window (``last``: this decision; ``parts``) once it has timed a decision after ``count``."""
    decided: dict = wait_for(lambda: (q := qr_decision(daemon))["count"] > count and q, timeout=30,
                             what="the unit's QR decision figure")
    return decided


def qr_after_idle(daemon: Daemon, sim: HwSim, shows: int, gap: float) -> None:
    times = qr_times(daemon, sim, shows, gap)
    p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"QR shown after {gap:.0f} s idle -> relay energised ({len(times)}): p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
          f"max {times[-1]:.1f} ms  (target < 500 ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the idle measurement")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the camera is up before measuring")
    parser.add_argument("--noise", type=float, default=0.0, help="hw-sim camera noise (grey levels): every frame "
                        "differs, as from a real sensor (0: a still scene re-sent as the same bytes)")
    parser.add_argument("--qr", type=int, default=10, help="QR codes shown after idle (0: none)")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds of blank scene before each QR code "
                        "(longer than camera.active_seconds, 3 s: the camera is idle when the code appears)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-camera-idle-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    daemon = Daemon(home / "d", sim, env={"DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    try:
        daemon.start()
        wait_for(lambda: camera_status(daemon).get("worker_pid") or camera_status(daemon).get("process_pid"),
                 timeout=60, what="camera process up")
        if args.noise:
            sim.cmd("camera", "noise", str(args.noise))
        time.sleep(args.warmup)
        print(f"scene: grey{f', sensor noise sigma {args.noise:g}' if args.noise else ', the same JPEG re-sent'}")
        measure_idle(daemon, args.seconds)
        if args.qr:
            qr_after_idle(daemon, sim, args.qr, args.gap)
    finally:
        daemon.kill()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
