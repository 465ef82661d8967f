"""A state dir made by the code before the per-folder migrations: the real daemon opens it in place."""

from __future__ import annotations

import sqlite3

from doorphoned.core.migrate import shipped
from tests.unit.test_migrate import LEGACY_FILES, has_tables_since_the_split, legacy_database, schema


def test_the_daemon_starts_on_a_database_of_the_single_numbered_list(daemon_factory, tmp_path):
    daemon = daemon_factory()
    daemon.state_dir.mkdir(parents=True, exist_ok=True)
    db_path = daemon.state_dir / "doorphoned.db"
    legacy_database(db_path, len(LEGACY_FILES))  # user Ann, one alarm in the door log, a counter
    with sqlite3.connect(db_path) as db:
        before = schema(db)
    daemon.start()
    users = daemon.ctl_json("user", "list")
    assert [u["name"] for u in users] == ["Ann"]
    assert any(e["reason"] == "x" and e["kind"] == "alarm" for e in daemon.door_log())
    daemon.ctl("user", "add", "Bob")  # the upgraded tables take writes
    assert daemon.terminate() == 0
    with sqlite3.connect(db_path) as db:
        assert schema(db) == before
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1000
        recorded = db.execute("SELECT feature, number FROM schema_migrations ORDER BY feature, number").fetchall()
        assert recorded == sorted((m.feature, m.number) for m in shipped())
        assert ("relay", 2) in recorded and ("sip", 1) in recorded and ("camera", 1) in recorded
        assert has_tables_since_the_split(db)
        assert sorted(r[0] for r in db.execute("SELECT name FROM users")) == ["Ann", "Bob"]
