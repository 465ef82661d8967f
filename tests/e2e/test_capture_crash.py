"""kill -9 a real process that is taking captures (and deleting old ones) at random points: the log never
names a missing or half-written JPEG, and after the start-up sweep files and rows agree one to one."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from doorphoned.camera.capture_files import DIR_NAME
from doorphoned.camera.captures import CaptureSettings, CaptureStore
from doorphoned.core.store import DB_NAME, Store
from tests.procs import ROOT

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

ROUNDS = int(os.environ.get("CAPTURE_CRASH_ROUNDS", "25"))


def rows(state: Path) -> list[tuple[int, str, int]]:
    """The capture log's rows; none while the store is not migrated yet (a kill during the first start's
    migration leaves the file without tables: the migration is one transaction, and the next start runs it)."""
    db = sqlite3.connect(state / DB_NAME)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'captures'").fetchone():
            return []
        return db.execute("SELECT id, file, size FROM captures ORDER BY id").fetchall()
    finally:
        db.close()


def assert_rows_name_whole_jpegs(state: Path) -> None:
    """Before any sweep: every row's file is there, of the recorded size, and decodes."""
    folder = state / DIR_NAME
    for row_id, name, size in rows(state):
        path = folder / name
        assert path.is_file(), f"row {row_id} names {name}, which is missing"
        data = path.read_bytes()
        assert len(data) == size, f"row {row_id}: {len(data)} bytes on disk, {size} recorded"
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None, f"{name} is no JPEG"


def test_kill_9_at_random_points_leaves_log_and_files_consistent(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"capture crash seed {seed}")
    state = tmp_path / "state"
    state.mkdir()
    swept_files = swept_rows = taken = 0
    for round_ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-m", "tests.capturechild", str(state), "6"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None
        if round_ % 4:  # most rounds: once captures flow (the retention deletes as it goes), at a random instant
            assert child.stdout.readline().strip().isdigit(), child.stderr.read() if child.stderr else ""
            time.sleep(rng.uniform(0, 0.3))
        else:  # some rounds: anywhere, start-up and migration included
            time.sleep(rng.uniform(0, 1.5))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        taken += len(out.split())
        if not (state / DB_NAME).exists():
            continue
        assert_rows_name_whole_jpegs(state)
        store = Store(state / DB_NAME)
        store.open()  # as the daemon starts: migrations, then the capture store's sweep
        captures = CaptureStore(state, store, CaptureSettings(keep_count=6, min_free_bytes=0))
        swept = captures.open()
        swept_files += swept["files"]
        swept_rows += swept["rows"]
        names = {name for _, name, _ in rows(state)}
        assert set(os.listdir(state / DIR_NAME)) == names, f"seed {seed}, round {round_}"
        assert len(names) <= 6  # retention ran before every write
        assert store.quick_check() == "ok"
        store.close()
    print(f"{ROUNDS} kills, {taken} captures taken, swept {swept_files} files and {swept_rows} rows")
    assert taken > ROUNDS  # the kills did land among captures
