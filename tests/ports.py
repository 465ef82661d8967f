"""Free loopback ports for the processes a test starts (daemon, sipp, mosquitto), chosen so that they cannot
be taken between the choice and the bind.

A port found by binding port 0 comes from the kernel's ephemeral range: between closing that probe and the
process binding it, any outgoing connection on the machine may get it as its local port (a TCP bind then
fails: sipp exits 254), and another xdist worker may be handed the same one. The ports here come from below
the ephemeral range, where the kernel never picks one by itself, from a slice of their own for each xdist
worker, each handed out once per process, and each probed free for TCP and UDP before it is handed out.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOWEST = 20000
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


def _candidates() -> Iterator[int]:
    """The slice once round, from an offset of this process's own: a bench a test starts shares the test's
    slice but not its order."""
    ports = _slice()
    offset = (os.getpid() * 7919) % len(ports)
    return itertools.cycle([*ports[offset:], *ports[:offset]])


_next = _candidates()
_given: set[int] = set()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A loopback port free for both TCP and UDP that no one else in this run is handed."""
    for _ in range(len(_slice())):
        port = next(_next)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port left in {_slice()}")


def free_port_pair() -> int:
    """A free even port whose successor is free too (RTP + RTCP)."""
    for _ in range(len(_slice())):
        port = next(_next)
        if port % 2 or {port, port + 1} & _given or not (_bindable(port) and _bindable(port + 1)):
            continue
        _given.update((port, port + 1))
        return port
    raise RuntimeError(f"no free port pair left in {_slice()}")
