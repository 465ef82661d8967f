#!/usr/bin/env python3
"""Issue 11's repro: viewers of a fresh monitor stream that get PLAY 200 and then no RTP.

Round after round, ``--viewers`` raw RTSP/TCP clients (tests/rtsp.py ``RawRtsp``) connect at once to the synthetic
host (``python -m doorphoned.camera.monitor --synthetic``), so each round builds the shared media afresh; each
viewer waits for its first RTP packet up to ``--wait`` s (past the watchdog's restart at 6 s: a viewer the
watchdog disconnected counts as stalled). ``--busy N`` adds N busy loops (the load the stall needed); with
``--gdb DIR`` the host's threads are dumped (``gdb -p PID -batch -ex "thread apply all bt"``) the first
``--dumps`` times a viewer has had nothing for ``--suspect`` s. ``--gst-debug`` is passed to the host as
GST_DEBUG (its log is kept in the printed folder).

    python bench/monitor_stall.py --rounds 100 --busy 2 [--gdb /tmp/dumps] [--slow-viewer]

``--slow-viewer`` adds one viewer per round that plays and then never reads its socket (head-of-line): the
others must still get RTP. Prints stalled / total with the load average at start and end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import wait_for  # noqa: E402
from tests.rtsp import PASSWORD, MonitorHost, RawRtsp, RtspError  # noqa: E402


class Viewer(threading.Thread):
    """One raw viewer: PLAY, then the time to its first RTP packet (None: none before the wait ran out)."""

    def __init__(self, port: int, start: threading.Barrier, wait: float) -> None:
        super().__init__(daemon=True)
        self.port, self.barrier, self.wait = port, start, wait
        self.status = 0
        self.first_rtp: float | None = None
        self.played_at = 0.0
        self.error = ""
        self.client: RawRtsp | None = None

    def run(self) -> None:
        try:
            self.barrier.wait(30)
            self.client = RawRtsp(self.port, "installer", PASSWORD)
            self.status = self.client.play()
            self.played_at = time.monotonic()
            if self.status == 200:
                self.client.rtp_packets(1, timeout=self.wait)
                self.first_rtp = time.monotonic() - self.played_at
        except (RtspError, OSError) as exc:
            self.error = str(exc)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


FSYNC_WRITER = ("import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
                "while True:\n    os.pwrite(fd, os.urandom(1 << 16), 0)\n    os.fsync(fd)\n")


def busy_loops(count: int, fsync_file: Path | None) -> list[subprocess.Popen[bytes]]:
    """Processes that keep a core busy each, and an fsync writer (the load of the issue's runs); the caller ends
    them by PID."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    if fsync_file is not None:
        loops.append(subprocess.Popen([sys.executable, "-c", FSYNC_WRITER, str(fsync_file)]))
    return loops


def dump_threads(pid: int, path: Path) -> None:
    """Every thread's backtrace of the host while a viewer waits (gdb stops the process meanwhile)."""
    with path.open("w") as out:
        subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"], stdout=out,
                       stderr=subprocess.STDOUT, timeout=120, check=False)


def watch_for_suspects(viewers: list[Viewer], args: argparse.Namespace, host: MonitorHost, state: dict) -> None:
    """Dump the host's threads once a played viewer has had no RTP for ``--suspect`` s."""
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline and any(v.is_alive() for v in viewers):
        now = time.monotonic()
        if any(v.status == 200 and v.first_rtp is None and now - v.played_at > args.suspect for v in viewers
               if v.played_at):
            if args.gdb and state["dumps"] < args.dumps and host.proc is not None:
                state["dumps"] += 1
                path = Path(args.gdb) / f"stall-{state['round']}.txt"
                dump_threads(host.proc.pid, path)
                print(f"round {state['round']}: a viewer had no RTP for {args.suspect} s; threads in {path}",
                      flush=True)
            return
        time.sleep(0.05)


def one_round(host: MonitorHost, args: argparse.Namespace, state: dict) -> list[Viewer]:
    barrier = threading.Barrier(args.viewers)
    viewers = [Viewer(host.port, barrier, args.wait) for _ in range(args.viewers)]
    slow = None
    if args.slow_viewer:  # plays first, then never reads: its socket fills up
        slow = RawRtsp(host.port, "installer", PASSWORD)
        slow.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
        assert slow.play() == 200
    for viewer in viewers:
        viewer.start()
    watch_for_suspects(viewers, args, host, state)
    for viewer in viewers:
        viewer.join(args.wait + 60)
    for viewer in viewers:
        viewer.close()
    if slow is not None:
        slow.close()
    wait_for(lambda: not host.request("viewers")["viewers"], timeout=60, what="viewers gone")
    return viewers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--wait", type=float, default=10.0, help="s a viewer waits for its first RTP packet")
    parser.add_argument("--suspect", type=float, default=2.0, help="s without RTP before the threads are dumped")
    parser.add_argument("--busy", type=int, default=0, help="busy loops started for the run")
    parser.add_argument("--fsync", action="store_true", help="an fsync writer too")
    parser.add_argument("--gdb", default="", help="folder for thread dumps of the stalled host")
    parser.add_argument("--dumps", type=int, default=3)
    parser.add_argument("--gst-debug", default="", help="GST_DEBUG for the host")
    parser.add_argument("--slow-viewer", action="store_true", help="a viewer that never reads, every round")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="monitor-stall-"))
    if args.gst_debug:
        os.environ.update(GST_DEBUG=args.gst_debug, GST_DEBUG_NO_COLOR="1",
                          GST_DEBUG_FILE=str(home / "gst.log"))
    if args.gdb:
        Path(args.gdb).mkdir(parents=True, exist_ok=True)
    loops = busy_loops(args.busy, home / "fsync.bin" if args.fsync else None)
    print(f"--- monitor stall repro: {args.rounds} rounds of {args.viewers} viewers at once on a fresh stream, "
          f"{args.busy} busy loops; load average at start {os.getloadavg()[0]:.1f}; logs in {home}", flush=True)
    host = MonitorHost(home)
    host.start()
    stalled = total = rounds_hit = 0
    firsts: list[float] = []
    state = {"dumps": 0, "round": 0}
    try:
        for number in range(args.rounds):
            state["round"] = number
            viewers = one_round(host, args, state)
            played = [v for v in viewers if v.status == 200]
            missed = [v for v in played if v.first_rtp is None]
            total += len(played)
            stalled += len(missed)
            rounds_hit += bool(missed)
            firsts += [v.first_rtp for v in played if v.first_rtp is not None]
            if number % 50 == 49:
                print(f"{number + 1} rounds: stalled {stalled} / {total}; load {os.getloadavg()[0]:.1f}", flush=True)
            if missed or len(played) < len(viewers):
                print(f"round {number}: {len(missed)} of {len(played)} played viewers got no RTP in {args.wait} s "
                      f"({', '.join(v.error or 'ok' for v in viewers)}); load {os.getloadavg()[0]:.1f}", flush=True)
        status = host.request("status")["pipeline"]
    finally:
        host.stop()
        for loop in loops:
            loop.kill()
            loop.wait()
    firsts.sort()
    p50 = firsts[len(firsts) // 2] * 1000 if firsts else 0.0
    worst = firsts[-1] * 1000 if firsts else 0.0
    print(f"stalled viewers {stalled} / {total} (in {rounds_hit} of {args.rounds} rounds); first RTP after PLAY "
          f"p50 {p50:.0f} ms, max {worst:.0f} ms; watchdog stalls {status['stalls']}, restarts {status['restarts']}; "
          f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
