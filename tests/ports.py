"""Free loopback ports for the servers a test starts (mosquitto, the unit's RTSP stream), chosen so that they
cannot be taken between the choice and the bind. SIP and RTP ports are tests/sipp.py's (why there).

A port found by binding port 0 comes from the kernel's ephemeral range: between closing that probe and the
process binding it, any outgoing connection on the machine may get it as its local port, and another xdist
worker may be handed the same one. The ports here come from below the ephemeral range, where the kernel never
picks one by itself, from a slice of their own for each xdist worker, probed free for TCP and UDP, and not
handed out again by the same process for a minute (while the process it went to may still be starting).
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

LOWEST = 10000
REUSE_AFTER = 60.0  # s before a port handed out may be handed out again (if free): its process has bound it
PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _slice() -> range:
    """This worker's ports: one slice per xdist worker, one more for processes outside xdist (benches by hand)."""
    top = max(_ephemeral_low(), LOWEST + 2000)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else workers
    width = (top - LOWEST) // (workers + 1)
    start = LOWEST + min(index, workers) * width
    return range(start, start + width)


def _random() -> random.Random:
    return random.Random(os.getpid() ^ time.monotonic_ns())


_pick = _random()
_given: dict[int, float] = {}  # port -> when it was handed out


def bindable(port: int) -> bool:
    """Whether ``port`` on loopback is free for both TCP and UDP now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A loopback port free for both TCP and UDP, not handed out by this process in the last minute (until its
    process binds it, a probe finds it free; picked at random in the slice: a process sharing the slice, such as
    a bench a test starts, does not walk the same order)."""
    ports = _slice()
    for _ in range(len(ports)):
        port = _pick.choice(ports)
        if time.monotonic() - _given.get(port, -REUSE_AFTER) >= REUSE_AFTER and bindable(port):
            _given[port] = time.monotonic()
            return port
    raise RuntimeError(f"no free port left in {ports}")
