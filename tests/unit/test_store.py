from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from doorphoned.store import DoorLogEntry, Store, StoreError, migrations

TS = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)


def test_migrations_are_numbered_in_sequence():
    numbers = [n for n, _, _ in migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_fresh_database_walks_every_migration_and_uses_wal(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    assert store.schema_version == len(migrations())
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_upgrade_from_version_1_applies_only_the_rest(tmp_path):
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.executescript(migrations()[0][2])
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO door_log (ts, kind, door, reason) VALUES ('2026-01-01T00:00:00+00:00', 'alarm', 1, 'x')")
    db.commit()
    db.close()
    store = Store(path)
    store.open()
    assert store.schema_version == len(migrations())
    assert store.door_log_count() == 1
    indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "door_log_door" in indexes


def test_newer_database_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path).open()


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
