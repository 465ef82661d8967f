#!/usr/bin/env python3
"""doorphoned start -> READY=1 time and RSS at READY (targets < 1 s and < 80 MB), over several starts.

READY=1 is read from a real NOTIFY_SOCKET, as systemd would; RSS is VmRSS from /proc at that moment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Daemon, HwSim  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    times, rss = [], []
    try:
        for i in range(args.runs):
            daemon = Daemon(home / f"d{i % 2}", sim)
            started = time.perf_counter()
            daemon.start(wait_ready=False)
            daemon.wait_message("READY=1")
            times.append((time.perf_counter() - started) * 1000)
            assert daemon.proc is not None
            rss.append(rss_mb(daemon.proc.pid))
            daemon.terminate()
            daemon.kill()
    finally:
        sim.stop()
    print(f"start -> READY=1 ({args.runs} runs): median {statistics.median(times):.0f} ms  "
          f"max {max(times):.0f} ms  (target < 1000 ms)")
    print(f"RSS at READY: median {statistics.median(rss):.1f} MB  max {max(rss):.1f} MB  (target < 80 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
