"""The reliability suite in `make test`: a 10-kill chaos run and a soak smoke, both through bench/ scripts.

The full versions are `make chaos` (100 kills) and `make soak` (an hour); see docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.procs import ROOT

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)


def run_script(script: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_chaos_ten_kills_keep_every_invariant():
    """kill -9 x10 under mixed load, with a hw-sim and a broker restart and the state disk filled twice.

    An open while the board is away must be a lock fault, never reported as done.
    """
    seed = int.from_bytes(os.urandom(4), "big")
    result = run_script("chaos.py", "--rounds", "10", "--seed", str(seed), "--round-seconds", "1.5",
                        "--disk-every", "5", "--p-sim", "0.05", "--p-broker", "0.05")
    out = result.stdout
    assert result.returncode == 0, f"chaos failed (replay: bench/chaos.py --rounds 10 --seed {seed}):\n" \
                                   f"{out[-4000:]}\n{result.stderr[-3000:]}"
    assert re.search(r"kills survived: 1[0-2];", out), out  # one per round, + one per disk-full restart
    assert re.search(r"hw-sim restarts: [1-9]", out) and re.search(r"broker restarts: [1-9]", out), out
    assert "reported done while hw-sim was down, no lock fault: 0" in out, out
    if os.geteuid() == 0:  # a tmpfs needs root; without one the disk-full phase is skipped (and says so)
        assert re.search(r"disk fills: 2 \(refusals logged [1-9]", out), out
        assert "remote opens meanwhile: answered ok without a record 0, " in out and "unanswered 0;" in out, out
    assert "events: " in out and "lost 0 []; duplicated 0" in out, out


def test_soak_smoke_samples_the_daemon_and_drains_the_outbox():
    result = run_script("soak.py", "--minutes", "0.35", "--sample-seconds", "5", "--no-sip", timeout=200)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert re.search(r"minute +[0-9.]+: daemon RSS [0-9.]+ MB, fds \d+, threads \d+; children RSS", out), out
    assert re.search(r"daemon RSS: [+-][0-9.]+ MB/h", out) and "outbox at the end: 0 events" in out, out
