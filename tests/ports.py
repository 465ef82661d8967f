"""Free loopback ports for the processes a test starts (daemon, sipp, mosquitto), chosen so that they cannot
be taken between the choice and the bind.

A port found by binding port 0 comes from the kernel's ephemeral range: between closing that probe and the
process binding it, any outgoing connection on the machine may get it as its local port (a TCP bind then
fails: sipp exits 254), and another xdist worker may be handed the same one. The ports here come from below
the ephemeral range, where the kernel never picks one by itself, from a slice of their own for each xdist
worker, probed free for TCP and UDP, and not handed out again by the same process for a minute (while the
process it went to may still be starting); an RTP pair is handed out with the ports above it that pjsua and sipp
also bind.
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


PAIR_SPAN = 8  # ports kept for each RTP pair: pjsua takes the next pairs up for further calls, sipp -mp binds four


def _random() -> random.Random:
    return random.Random(os.getpid() ^ time.monotonic_ns())


_pick = _random()
_given: dict[int, float] = {}  # port -> when it was handed out


def _taken(ports: set[int] | range) -> bool:
    """Whether any of ``ports`` was handed out lately (until its process binds it, a probe finds it free)."""
    now = time.monotonic()
    return any(now - _given.get(port, -REUSE_AFTER) < REUSE_AFTER for port in ports)


def _give(ports: range) -> None:
    now = time.monotonic()
    for port in ports:
        _given[port] = now


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A loopback port free for both TCP and UDP, not handed out by this process in the last minute (picked at
    random in the slice: a process sharing the slice, such as a bench a test starts, does not walk the same
    order)."""
    ports = _slice()
    for _ in range(len(ports)):
        port = _pick.choice(ports)
        if not _taken(range(port, port + 1)) and _bindable(port):
            _give(range(port, port + 1))
            return port
    raise RuntimeError(f"no free port left in {ports}")


def free_port_pair() -> int:
    """A free even port whose successor is free too (RTP + RTCP), handed out with the :data:`PAIR_SPAN` ports
    from it (all free): pjsua binds the next pairs up for further calls, sipp's ``-mp`` binds four ports (audio
    and video, RTP and RTCP each)."""
    ports = _slice()
    bases = range(ports.start + (-ports.start) % PAIR_SPAN, ports.stop - PAIR_SPAN + 1, PAIR_SPAN)
    for _ in range(len(bases)):
        base = _pick.choice(bases)
        block = range(base, base + PAIR_SPAN)
        if _taken(block) or not all(_bindable(port) for port in block):
            continue
        _give(block)
        return base
    raise RuntimeError(f"no free port pair left in {ports}")
