#!/usr/bin/env python3
"""Soak: the mixed load of bench/chaos.py for an hour (``--minutes``), with no faults, watching for leaks.

Every ``--sample-seconds`` (default 60) prints the daemon's RSS, open fds and threads (and its child
processes': the camera worker), the database size and the WAL size. At the end, a least-squares line over
the samples after the warm-up gives each one's growth per hour. Exits 1 when a growth is clearly non-zero:

* RSS of the daemon or of its children: more than 8 MB/h *and* more than 10 % of its size after warm-up;
* open fds: more than 4/h; threads: more than 2/h (both are small integers that should stay flat);
* WAL: more than 8 MB/h (SQLite checkpoints keep it a sawtooth of a few MB);
* the outbox: more than 100 events left at the end (every event should be acknowledged while online).

The database itself grows with the door log (one entry per decision, kept up to ``daemon.door_log_max``):
its growth is printed with the bytes per door-log entry, and fails only above 2 KB per entry.
Growth is judged only when the fit spans at least 10 minutes (a short smoke checks that it runs).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import Commander, Credentials, Load, Rig, proc_tree  # noqa: E402

MB = 1024 * 1024
JUDGED_MINUTES = 10.0  # growth is judged only over at least this many minutes after the warm-up


@dataclass
class Sample:
    minute: float
    rss: float  # MB, the daemon
    child_rss: float  # MB, its descendants
    fds: int
    threads: int
    child_fds: int
    child_threads: int
    db: float  # MB
    wal: float  # MB
    entries: int


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, open fds, threads) of one process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0.0, 0, 0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, fds, int(fields["Threads"])


def sample(rig: Rig, started: float) -> Sample:
    assert rig.daemon.proc is not None
    pid = rig.daemon.proc.pid
    rss, fds, threads = proc_stats(pid)
    children = [proc_stats(p) for p in proc_tree(pid) if p != pid]
    size = lambda p: p.stat().st_size / MB if p.exists() else 0.0  # noqa: E731
    entries = rig.query("SELECT count(*) FROM door_log")[0][0]
    return Sample((time.monotonic() - started) / 60, rss, sum(c[0] for c in children), fds, threads,
                  sum(c[1] for c in children), sum(c[2] for c in children), size(rig.db_path),
                  size(rig.db_path.with_name(rig.db_path.name + "-wal")), entries)


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (minutes), per hour."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60


def verdict(samples: list[Sample], warmup: float, outbox: int) -> list[str]:
    """Print the growth per hour of each figure after the warm-up; return the failures."""
    kept = [s for s in samples if s.minute >= warmup] or samples[-2:]
    xs = [s.minute for s in kept]
    failures = []
    print(f"growth per hour after a {warmup:g}-minute warm-up (linear fit over {len(kept)} samples):")
    checks = [("daemon RSS", "rss", "MB", None), ("children RSS", "child_rss", "MB", None),
              ("daemon fds", "fds", "", 4.0), ("daemon threads", "threads", "", 2.0),
              ("children fds", "child_fds", "", 4.0), ("children threads", "child_threads", "", 2.0),
              ("WAL", "wal", "MB", 8.0), ("database", "db", "MB", None)]
    for label, attr, unit, limit in checks:
        name = label
        ys = [float(getattr(s, attr)) for s in kept]
        growth = slope_per_hour(xs, ys)
        if attr in ("rss", "child_rss"):
            bad = growth > 8.0 and growth > 0.1 * ys[0]
        elif attr == "db":
            per_entry = (kept[-1].db - kept[0].db) * MB / max(1, kept[-1].entries - kept[0].entries)
            bad = per_entry > 2048
            name += f" ({per_entry:,.0f} bytes per door-log entry)"
        else:
            bad = limit is not None and growth > limit
        print(f"  {name}: {growth:+.2f}{(' ' + unit) if unit else ''}/h (from {ys[0]:g} to {ys[-1]:g})"
              + ("  TOO MUCH" if bad else ""))
        if bad:
            failures.append(f"{name} grows {growth:+.2f}{unit}/h")
    print(f"outbox at the end: {outbox} events")
    if outbox > 100:
        failures.append(f"{outbox} events left in the outbox")
    if xs[-1] - xs[0] < JUDGED_MINUTES:
        print(f"(a fit over {xs[-1] - xs[0]:.1f} minutes is too short to judge growth: only the outbox is checked)")
        return [f for f in failures if "outbox" in f]
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=None, help="minutes left out of the fit (default: 1/6)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sip", action="store_true")
    args = parser.parse_args()
    warmup = args.minutes / 6 if args.warmup is None else args.warmup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes (finally) on a plain kill
    home = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"soak: {args.minutes:g} minutes, a sample every {args.sample_seconds:g} s, work dir {home}", flush=True)
    rig = Rig(home)
    creds = Credentials.make(random.Random(args.seed), people=12, keys=8, remote_users=2000)
    samples: list[Sample] = []
    try:
        rig.start()
        commander = Commander(rig.broker)
        rig.push_snapshot(creds)
        load = Load(rig, creds, commander, args.seed, sip=not args.no_sip)
        started = time.monotonic()
        load.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(max(0.0, min(args.sample_seconds, end - time.monotonic())))
            if rig.daemon.proc is None or rig.daemon.proc.poll() is not None:
                raise SystemExit(f"the daemon died: {rig.daemon.log_text()[-2000:]}")
            s = sample(rig, started)
            samples.append(s)
            print(f"minute {s.minute:5.1f}: daemon RSS {s.rss:.1f} MB, fds {s.fds}, threads {s.threads}; "
                  f"children RSS {s.child_rss:.1f} MB, fds {s.child_fds}, threads {s.child_threads}; "
                  f"DB {s.db:.2f} MB, WAL {s.wal:.2f} MB, door log {s.entries}", flush=True)
        load.stop()
        print(f"load: {dict(sorted(load.counts.items()))}")
        outbox = rig.query("SELECT count(*) FROM outbox")[0][0]
        commander.close()
    finally:
        rig.stop()
    failures = verdict(samples, warmup, outbox)
    print("RESULT: " + ("FAIL: " + "; ".join(failures) if failures else "no growth beyond the thresholds"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
