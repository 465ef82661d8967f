#!/usr/bin/env python3
"""`doorphonectl relay open` -> relay energised in hw-sim: p50/p99 latency (target p99 < 20 ms).

Starts its own hw-sim and doorphoned (--sim) in a temp dir. Each open goes over a fresh control-socket
connection, exactly what doorphonectl sends; the time ends when hw-sim reports the coil energised (a
`watch` stream on hw-sim's socket). Interpreter start-up of the CLI itself is reported separately.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from doorphoned.control.client import ControlClient  # noqa: E402
from tests.procs import BIN, Daemon, HwSim, wait_for  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Watch:
    """hw-sim's change stream."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.sendall(b'{"op": "watch"}\n')
        self.file = self.sock.makefile("rb")
        self.file.readline()

    def wait_relay(self, relay: int, energised: bool) -> float:
        while True:
            event = json.loads(self.file.readline())
            if event.get("ev") == "relay" and event["relay"] == relay and event["energised"] == energised:
                return time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--opens", type=int, default=200)
    parser.add_argument("--cli-runs", type=int, default=10, help="whole `doorphonectl` processes timed")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    daemon = Daemon(home / "d", sim, env={"DOORPHONED_DOORS_1_HOLD_TIME": "1", "DOORPHONED_DOORS_2_HOLD_TIME": "1"})
    try:
        daemon.start()
        watch = Watch(sim.socket)
        latencies, replies = [], []
        for i in range(args.opens):
            door = 1 + i % 2
            started = time.perf_counter()
            with ControlClient(daemon.socket) as client:
                client.call("relay.open", door=door)
                replied = time.perf_counter()
            energised = watch.wait_relay(door, True)
            latencies.append((energised - started) * 1000)
            replies.append((replied - started) * 1000)
            if door == 2:
                watch.wait_relay(2, False)
        wait_for(lambda: not any(r["energised"] for r in sim.relays()), timeout=5, what="relays released")
        cli = []
        for _ in range(args.cli_runs):
            started = time.perf_counter()
            subprocess.run([str(BIN / "doorphonectl"), "--socket", str(daemon.socket), "relay", "open", "1"],
                           check=True, capture_output=True)
            cli.append((time.perf_counter() - started) * 1000)
            watch.wait_relay(1, False)
        print(f"relay open -> energised ({args.opens} opens): p50 {percentile(latencies, 50):.2f} ms  "
              f"p99 {percentile(latencies, 99):.2f} ms  max {max(latencies):.2f} ms  (target p99 < 20 ms)")
        print(f"relay open -> CLI reply: p50 {percentile(replies, 50):.2f} ms  p99 {percentile(replies, 99):.2f} ms")
        if cli:
            print(f"whole doorphonectl process ({args.cli_runs} runs, incl. Python start-up): "
                  f"median {statistics.median(cli):.0f} ms")
    finally:
        daemon.kill()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
