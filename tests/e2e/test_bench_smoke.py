"""The bench scripts run end to end with small sizes and print their figures (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.procs import ROOT


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_relay_latency_bench_prints_percentiles():
    out = run_bench("relay_latency.py", "--opens", "6", "--cli-runs", "1")
    assert re.search(r"relay open -> energised \(6 opens\): p50 [0-9.]+ ms  p99 [0-9.]+ ms", out), out


def test_startup_bench_prints_time_and_rss():
    out = run_bench("startup.py", "--runs", "2")
    assert re.search(r"start -> READY=1 \(2 runs\): median \d+ ms", out), out
    assert re.search(r"RSS at READY: median [0-9.]+ MB", out), out
