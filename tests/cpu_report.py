"""Per-test CPU for finding what makes ``make test`` slow: ``pytest -p tests.cpu_report`` with
``CPU_REPORT=FILE`` appends one JSON line per test (wall seconds, CPU seconds of the test process and of every
process it started, children of children included).

Why sampling: the daemons' workers (camera, face) are grandchildren, and a daemon killed with SIGKILL never
reaps them, so ``RUSAGE_CHILDREN`` alone misses their CPU. A thread reads ``/proc`` every 0.1 s and keeps each
descendant's last CPU figure; a process that lives less than a sample is missed (``rusage_children`` is printed
too for comparison). Linux only; measurement, not an assertion.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import pytest

TICK = os.sysconf("SC_CLK_TCK")
Key = tuple[int, int]  # (pid, start time in ticks): a pid reused later is another process


def _procs() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, start ticks, CPU seconds of the process itself) for every process readable now."""
    table: dict[int, tuple[int, int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / TICK)
    return table


def _descendants(root: int) -> dict[Key, float]:
    table = _procs()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[Key, float] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        _, start, cpu = table[pid]
        found[(pid, start)] = cpu
        stack.extend(children.get(pid, []))
    return found


class _Sampler:
    """Keeps the largest CPU figure seen for every descendant of this process while a test runs."""

    def __init__(self) -> None:
        self.seen: dict[Key, float] = {}
        self.baseline: dict[Key, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for key, cpu in _descendants(os.getpid()).items():
            self.seen[key] = max(cpu, self.seen.get(key, 0.0))

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self._sample()

    def start(self) -> None:
        self.baseline = _descendants(os.getpid())
        self.thread.start()

    def finish(self) -> float:
        self.stop.set()
        self.thread.join()
        self._sample()
        return sum(cpu - self.baseline.get(key, 0.0) for key, cpu in self.seen.items())


def _self_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any):
    out = os.environ.get("CPU_REPORT")
    if not out:
        yield
        return
    sampler = _Sampler()
    wall, own, reaped = time.monotonic(), _self_cpu(resource.RUSAGE_SELF), _self_cpu(resource.RUSAGE_CHILDREN)
    sampler.start()
    yield
    descendants = sampler.finish()
    row = {"test": item.nodeid, "wall": round(time.monotonic() - wall, 2),
           "self_cpu": round(_self_cpu(resource.RUSAGE_SELF) - own, 2),
           "children_cpu": round(descendants, 2),
           "rusage_children": round(_self_cpu(resource.RUSAGE_CHILDREN) - reaped, 2)}
    row["cpu"] = round(row["self_cpu"] + row["children_cpu"], 2)
    with open(out, "a") as report:
        report.write(json.dumps(row) + "\n")
