"""Keypad PIN -> relay latency through hw-sim, as the bench and the SIP flood test measure it."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class KeypadProbe:
    """Types a PIN on hw-sim's keypad and times until relay ``relay`` changes state.

    Use with a bistable door: every grant toggles the lock, so probes need not wait for a hold time.
    """

    def __init__(self, sim_socket: Path, pin: str, relay: int = 1) -> None:
        self.pin, self.relay = pin, relay
        self.watch = socket.socket(socket.AF_UNIX)
        self.watch.connect(str(sim_socket))
        self.watch.sendall(b'{"op": "watch"}\n')
        self.events = self.watch.makefile("rb")
        self.events.readline()
        self.control = socket.socket(socket.AF_UNIX)
        self.control.connect(str(sim_socket))
        self.replies = self.control.makefile("rb")

    def once(self) -> float:
        """One PIN entry; milliseconds until the relay moved."""
        started = time.perf_counter()
        self.control.sendall(json.dumps({"op": "keypad", "keys": f"{self.pin}#"}).encode() + b"\n")
        self.replies.readline()
        while True:
            event = json.loads(self.events.readline())
            if event.get("ev") == "relay" and event["relay"] == self.relay:
                return (time.perf_counter() - started) * 1000

    def run(self, n: int, gap: float = 0.02) -> list[float]:
        times = []
        for _ in range(n):
            times.append(self.once())
            time.sleep(gap)
        return times

    def close(self) -> None:
        self.watch.close()
        self.control.close()
