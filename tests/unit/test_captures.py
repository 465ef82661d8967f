"""The capture store on a real SQLite file and real JPEG files: modes, retention (count, bytes, age, oldest
first), the free-space floor, the start-up sweep, and requests from outside that name no valid capture."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.captures import AUTOMATIC, CaptureNotFoundError, CaptureSettings, CaptureStore, table
from doorphoned.core.clock import FixedClock
from doorphoned.core.frames import Frame
from doorphoned.core.store import DB_NAME, Store
from tests import scenes

START = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


def picture(seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    return Frame(seed, 0.0, scenes.render(scenes.porch(), rng=rng))


def open_store(tmp_path: Path, settings: CaptureSettings | None = None,
               clock: FixedClock | None = None) -> CaptureStore:
    store = Store(tmp_path / DB_NAME)
    store.open()
    captures = CaptureStore(tmp_path, store, settings or CaptureSettings(min_free_bytes=0), clock or FixedClock(START))
    captures.open()
    return captures


def files(captures: CaptureStore) -> list[str]:
    return sorted(os.listdir(captures.dir))


def test_a_capture_is_a_private_jpeg_and_a_log_row_that_reads_back(tmp_path: Path) -> None:
    captures = open_store(tmp_path)
    taken = captures.take(picture(), "granted", door=2, log_id=41)
    assert stat.S_IMODE(os.stat(captures.dir).st_mode) == 0o700
    path = captures.dir / taken.file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.stat().st_size == taken.size > 1000
    data = captures.read(taken.id)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    assert captures.read(taken.id, offset=10, length=100) == data[10:110]  # a chunk, for capture.get
    listed = captures.recent()
    assert [c.as_dict() for c in listed] == [{"id": taken.id, "ts": START.isoformat(), "trigger": "granted",
                                              "door": 2, "log_id": 41, "size": taken.size, "width": 640,
                                              "height": 480, "file": taken.file}]
    with pytest.raises(CaptureNotFoundError):
        captures.read(taken.id + 1)
    lines = table(listed).splitlines()
    assert len(lines) == 2 and lines[1].split()[:4] == [str(taken.id), START.isoformat(), "granted", "2"]
    assert table([]) == "no captures"


def test_retention_by_count_removes_the_oldest_first(tmp_path: Path) -> None:
    clock = FixedClock(START)
    captures = open_store(tmp_path, CaptureSettings(keep_count=5, min_free_bytes=0), clock)
    ids = []
    for i in range(8):
        ids.append(captures.take(picture(i), "manual").id)
        clock.advance(60)
    kept = captures.recent()
    assert [c.id for c in kept] == ids[::-1][:5]
    assert files(captures) == sorted(c.file for c in kept)
    assert captures.stats()["removed"] == 3


def test_retention_by_bytes_keeps_the_total_under_the_budget(tmp_path: Path) -> None:
    probe = open_store(tmp_path / "probe").encode(picture())
    budget = int(len(probe.jpeg) * 3.5)
    clock = FixedClock(START)
    captures = open_store(tmp_path, CaptureSettings(keep_bytes=budget, min_free_bytes=0), clock)
    for i in range(6):
        captures.take(picture(i), "motion")
        clock.advance(1)
        assert captures.stats()["bytes"] <= budget
    assert captures.stats()["count"] == 3
    assert sum(p.stat().st_size for p in captures.dir.iterdir()) <= budget


def test_retention_by_age(tmp_path: Path) -> None:
    clock = FixedClock(START)
    captures = open_store(tmp_path, CaptureSettings(keep_days=7, min_free_bytes=0), clock)
    old = [captures.take(picture(i), "call").id for i in range(3)]
    clock.advance(6 * 86400)
    middle = captures.take(picture(5), "call").id
    clock.advance(1.5 * 86400)  # the first three are now 7.5 days old, the middle one 1.5
    new = captures.take(picture(6), "call").id
    assert [c.id for c in captures.recent()] == [new, middle]
    assert old[0] < middle
    assert len(files(captures)) == 2


def test_a_capture_that_would_go_below_the_free_space_floor_is_refused_with_the_figures(tmp_path: Path) -> None:
    captures = open_store(tmp_path)
    floor = captures.free_bytes() + 2**30  # a floor above what this disk has free
    captures.settings = CaptureSettings(min_free_bytes=floor)
    with pytest.raises(CaptureError, match=r"capture refused: \d+ MB free on the state disk, .* below \d+ MB"):
        captures.take(picture(), "manual")
    assert files(captures) == [] and captures.recent() == []


def test_a_capture_larger_than_the_whole_budget_is_refused(tmp_path: Path) -> None:
    captures = open_store(tmp_path, CaptureSettings(keep_bytes=2048, min_free_bytes=0))
    with pytest.raises(CaptureError, match="larger than the whole retention budget"):
        captures.take(picture(), "manual")
    assert files(captures) == []


@pytest.mark.parametrize(("trigger", "door", "log_id", "words"), [
    ("MOTION", None, None, "unknown capture trigger"), ("motion\x00", None, None, "unknown capture trigger"),
    ("\u202emanual", None, None, "unknown capture trigger"), ("../../etc/passwd", None, None, "unknown"),
    (None, None, None, "unknown"), (1, None, None, "unknown"), ("A" * 100_000, None, None, "unknown"),
    ("manual", 0, None, "door must be"), ("manual", 17, None, "door must be"), ("manual", True, None, "door"),
    ("manual", "1", None, "door"), ("manual", 1.0, None, "door"), ("manual", 2**70, None, "door"),
    ("manual", float("nan"), None, "door"), ("manual", 1, 0, "related log entry"),
    ("manual", 1, -5, "related log entry"), ("manual", 1, "7", "related log entry"), ("manual", 1, 2**64, "related"),
])
def test_a_request_naming_no_valid_capture_is_refused_and_writes_nothing(tmp_path: Path, trigger: object,
                                                                        door: object, log_id: object,
                                                                        words: str) -> None:
    captures = open_store(tmp_path)
    with pytest.raises(CaptureError, match=words) as refused:
        captures.take(picture(), trigger, door=door, log_id=log_id)
    assert len(str(refused.value)) < 300  # a 100 kB name is not echoed back whole
    assert files(captures) == [] and captures.recent() == []


def test_a_trigger_switched_off_in_config_takes_no_capture_but_manual_always_works(tmp_path: Path) -> None:
    captures = open_store(tmp_path, CaptureSettings(triggers=frozenset({"call"}), min_free_bytes=0))
    for trigger in set(AUTOMATIC) - {"call"}:
        with pytest.raises(CaptureError, match="switched off"):
            captures.take(picture(), trigger)
    captures.take(picture(), "call")
    captures.take(picture(), "manual")
    assert sorted(c.trigger for c in captures.recent()) == ["call", "manual"]


def test_a_frame_that_is_not_a_picture_is_refused(tmp_path: Path) -> None:
    captures = open_store(tmp_path)
    for image in (None, np.zeros((10, 10, 3), np.float64), np.zeros((0, 10), np.uint8), np.zeros((9000, 2), np.uint8)):
        with pytest.raises(CaptureError):
            captures.take(Frame(1, 0.0, image), "manual")
    assert files(captures) == []


def test_the_sweep_removes_rows_without_files_and_files_without_rows(tmp_path: Path) -> None:
    captures = open_store(tmp_path)
    kept = captures.take(picture(1), "manual")
    lost = captures.take(picture(2), "manual")
    (captures.dir / lost.file).unlink()  # a row whose file is gone
    (captures.dir / "20260101T000000-deadbeef.jpg").write_bytes(b"\xff\xd8 no row")  # a file without a row
    (captures.dir / ".20260101T000000-cafecafe.jpg.tmp").write_bytes(b"\xff\xd8 half")  # a write cut short
    assert captures.sweep() == {"rows": 1, "files": 2}
    assert [c.id for c in captures.recent()] == [kept.id]
    assert files(captures) == [kept.file]
    assert captures.sweep() == {"rows": 0, "files": 0}


def test_settings_from_config_are_checked_by_key() -> None:
    settings = CaptureSettings.from_dict({"triggers": ["call", "motion"], "keep_count": 50, "keep_days": 1.5})
    assert settings.triggers == frozenset({"call", "motion"}) and settings.keep_count == 50
    for bad, words in [({"triggers": ["doorbell"]}, "unknown capture trigger"), ({"keep_count": 0}, "keep_count"),
                       ({"keep_days": float("nan")}, "keep_days"), ({"keep_days": float("inf")}, "keep_days"),
                       ({"keep_days": 10**400}, "keep_days"), ({"keep_count": 10**400}, "keep_count"),
                       ({"jpeg_quality": 101}, "jpeg_quality"), ({"keep_bytes": True}, "keep_bytes"),
                       ({"triggers": "call"}, "list"), ({"size": 1}, "unknown capture setting"), ([], "table")]:
        with pytest.raises(CaptureError, match=words):
            CaptureSettings.from_dict(bad)


def test_take_async_encodes_and_writes_off_the_loop_thread_and_records_on_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    captures = open_store(tmp_path)
    threads: dict[str, int] = {}
    write, encode = captures.write, captures.encode

    def spy_write(pending: Any) -> None:
        threads["write"] = threading.get_ident()
        write(pending)

    def spy_encode(frame: Frame):
        threads["encode"] = threading.get_ident()
        return encode(frame)

    monkeypatch.setattr(captures, "write", spy_write)
    monkeypatch.setattr(captures, "encode", spy_encode)
    taken = asyncio.run(captures.take_async(picture(), "call", door=3))
    loop_thread = threading.get_ident()
    assert threads["write"] != loop_thread and threads["encode"] != loop_thread
    assert captures.get(taken.id) == taken and files(captures) == [taken.file]
    with pytest.raises(CaptureError, match="door must be"):
        asyncio.run(captures.take_async(picture(), "call", door=99))
    assert files(captures) == [taken.file]
