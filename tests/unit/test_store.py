from __future__ import annotations

from datetime import UTC, datetime

from doorphoned.core.migrate import shipped
from doorphoned.core.store import Checkpointer, DoorLogEntry, Store
from tests.procs import wait_for

TS = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)


def test_fresh_database_uses_wal_and_full_sync(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    assert store.schema_version == len(shipped())
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_door_log_round_trip_filters_and_prune(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    for i in range(10):
        store.append_door_log(DoorLogEntry(ts=TS, kind="access" if i % 2 else "alarm", door=1 + i % 2,
                                           credential="exit_button", subject="exit button", granted=True,
                                           reason="granted", detail={"i": i}))
    newest = store.door_log(limit=3)
    assert [e.detail["i"] for e in newest] == [9, 8, 7]
    assert all(e.door == 2 for e in store.door_log(door=2))
    assert all(e.kind == "alarm" for e in store.door_log(kind="alarm"))
    assert store.prune_door_log(4) == 2  # 4 ordinary entries and, a budget of their own, 4 alarms
    assert [e.detail["i"] for e in store.door_log(limit=100)] == [9, 8, 7, 6, 5, 4, 3, 2]
    store.close()
    reopened = Store(tmp_path / "db.sqlite")
    reopened.open()
    assert reopened.door_log(limit=1)[0].ts == TS


def test_checkpointer_takes_wal_checkpoints_off_the_writing_connection(tmp_path):
    """The daemon's (loop's) connection never checkpoints; the thread copies the WAL into the database."""
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.open()
    store.start_checkpointer()
    checkpointer = store._checkpointer
    assert checkpointer is not None
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        store.db.execute("CREATE TABLE filler (x BLOB)")
        with checkpointer.paused():  # nothing copies meanwhile: the writes stay in the WAL
            for _ in range(60):  # ~1,500 pages: SQLite alone would have checkpointed inside a COMMIT
                store.db.execute("INSERT INTO filler VALUES (randomblob(100000))")
            assert path.stat().st_size < 1_000_000
        wait_for(lambda: path.stat().st_size > 6_000_000, timeout=30, what="the WAL copied into the database")
    finally:
        store.stop_checkpointer()
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own again
    store.close()


def test_checkpointer_copies_what_was_written_before_it_stopped(tmp_path):
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.open()
    store.db.execute("PRAGMA wal_autocheckpoint=0")
    checkpointer = Checkpointer(path, interval=3600)  # no pass but the last one
    checkpointer.start()
    store.db.execute("CREATE TABLE filler (x BLOB)")
    store.db.execute("INSERT INTO filler VALUES (randomblob(4000000))")
    assert path.stat().st_size < 1_000_000
    checkpointer.stop()
    assert path.stat().st_size > 4_000_000
    store.close()


def test_the_wal_is_rewound_under_a_steady_stream_of_writes(tmp_path):
    """Passive checkpoints alone never complete while writes keep coming (the WAL grew to 1.4 GB during a
    100,000-user snapshot); a bulk writer that settles the WAL between its transactions (as a snapshot's
    slices do) lets a pass complete, and the WAL is rewound and cut back to the limit."""
    import asyncio

    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.open()
    store.start_checkpointer()
    store.db.execute("CREATE TABLE filler (x BLOB)")
    wal = path.with_name(path.name + "-wal")
    largest = 0
    for _ in range(1500):  # ~120 MB in small transactions, back to back
        store.db.execute("INSERT INTO filler VALUES (randomblob(80000))")
        store.db.execute("DELETE FROM filler WHERE rowid % 2 = 0")
        asyncio.run(store.settle_wal())
        largest = max(largest, wal.stat().st_size)
    store.stop_checkpointer()
    store.close()
    assert largest < 100 * 2**20, f"the WAL reached {largest / 2**20:.0f} MB"


def test_a_bulk_writer_settles_a_long_wal_with_a_pass_off_the_loop(tmp_path, monkeypatch):
    """Between two slices of a snapshot: a WAL past SETTLE_FRAMES is checkpointed in a thread, completely
    (nothing writes meanwhile), so the next write rewinds it; a short WAL costs nothing."""
    import asyncio

    monkeypatch.setattr("doorphoned.core.store.CHECKPOINT_INTERVAL", 3600)  # no timed pass in this test
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.open()
    store.start_checkpointer()
    checkpointer = store._checkpointer
    assert checkpointer is not None
    store.db.execute("CREATE TABLE filler (x BLOB)")
    store.db.execute("INSERT INTO filler VALUES (randomblob(8000000))")
    asyncio.run(store.settle_wal())  # the checkpointer has not seen the WAL yet: nothing to do
    assert path.stat().st_size < 1_000_000
    checkpointer.wal_frames = 2000  # what a timed pass during steady writes would have reported
    asyncio.run(store.settle_wal())
    assert path.stat().st_size > 8_000_000 and checkpointer.wal_frames == 0
    store.stop_checkpointer()
    store.close()


def test_flush_wal_syncs_the_wal_off_the_loop_and_tolerates_none(tmp_path, monkeypatch):
    """A bulk writer's slices are synced in a worker thread (never on the loop's thread); with no WAL
    file yet there is nothing to sync and nothing fails."""
    import asyncio
    import os
    import threading

    store = Store(tmp_path / "db.sqlite")
    store.open()
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread() is threading.main_thread()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.db.execute("CREATE TABLE t (x)")
    store.db.execute("INSERT INTO t VALUES (1)")
    asyncio.run(store.flush_wal())
    assert synced == [(f"{tmp_path / 'db.sqlite'}-wal", False)]
    store.close()
    (tmp_path / "db.sqlite-wal").unlink(missing_ok=True)
    asyncio.run(store.flush_wal())  # no WAL: nothing to do
