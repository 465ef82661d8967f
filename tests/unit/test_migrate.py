"""The per-folder migration runner: layout, order, upgrade in place from the single numbered list.

``tests/fixtures/migrations-0.7/`` holds the SQL files of the single list exactly as the code before
the split shipped them (``doorphoned/migrations/0001..0007``); ``legacy_database`` applies them the
way that code's runner did (one transaction each, progress in ``PRAGMA user_version``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from doorphoned.core.migrate import PER_FEATURE, Migration, MigrationError, Runner, plan, read_migration, shipped
from doorphoned.core.store import Store, StoreError

LEGACY_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "migrations-0.7"
LEGACY_FILES = sorted(LEGACY_DIR.glob("*.sql"))


def legacy_database(path: Path, version: int) -> None:
    """A database as the pre-split runner left it after its first ``version`` migrations, with rows."""
    db = sqlite3.connect(path, isolation_level=None)
    for number, file in enumerate(LEGACY_FILES[:version], start=1):
        db.execute("BEGIN")
        for statement in _statements(file.read_text(encoding="utf-8")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
        db.execute("COMMIT")
    if version >= 1:
        db.execute("INSERT INTO door_log (ts, kind, door, reason) VALUES ('2026-01-01T00:00:00+00:00', 'alarm', 1, "
                   "'x')")
    if version >= 3:
        db.execute("INSERT INTO users (id, name, created, updated) VALUES ('u1', 'Ann', 'c', 'u')")
    if version >= 4:
        db.execute("INSERT INTO counters (name, value) VALUES ('outbox_dropped', 5)")
    db.close()


def _statements(sql: str) -> list[str]:
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        if not line.lstrip().startswith("--"):
            buffer += line
            if sqlite3.complete_statement(buffer):
                statements.append(buffer.strip())
                buffer = ""
    return statements


# Tables that migrations added after the split (no ``-- legacy`` line): a fresh or upgraded database has
# them on top of the single list's schema.
SINCE_THE_SPLIT = ("captures", "signed_key_uses", "revoked_keys", "cloud_signing_keys", "phone_keys", "phone_counters",
                   "face_templates", "face_version", "face_photo_doomed")
# Columns added since (ALTER TABLE appends them to the table's CREATE text): left out of the comparison.
COLUMNS_SINCE_THE_SPLIT = (", recipients TEXT NOT NULL DEFAULT '[]'", ", call_id TEXT NOT NULL DEFAULT ''",
                           ", capture_id INTEGER", ", video TEXT")


def schema(db: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    """What the features' tables of the single list look like: sqlite_master without page numbers, the
    record, or the tables added since."""
    rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != 'schema_migrations'")
    return sorted((kind, name, table, _without_new_columns(sql)) for kind, name, table, sql in rows
                  if table not in SINCE_THE_SPLIT)


def _without_new_columns(sql: str | None) -> str | None:
    for column in COLUMNS_SINCE_THE_SPLIT:
        sql = sql.replace(column, "") if sql else sql
    return sql


def has_tables_since_the_split(db: sqlite3.Connection) -> bool:
    names = {row[0] for row in db.execute("SELECT tbl_name FROM sqlite_master")}
    return set(SINCE_THE_SPLIT) <= names


@pytest.fixture(scope="module")
def legacy_schema(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str, str]]:
    path = tmp_path_factory.mktemp("legacy") / "old.db"
    legacy_database(path, len(LEGACY_FILES))
    with sqlite3.connect(path) as db:
        return schema(db)


def test_the_fixture_is_the_whole_single_list():
    assert [f.name[:4] for f in LEGACY_FILES] == [f"{n:04d}" for n in range(1, 8)]


def test_each_folder_owns_its_tables_numbered_from_one():
    found = {(m.feature, m.number): m.name for m in shipped()}
    assert found == {
        ("core", 1): "0001_settings.sql", ("core", 2): "0002_counters.sql", ("core", 3): "0003_config_overrides.sql",
        ("relay", 1): "0001_door_log.sql", ("relay", 2): "0002_door_log_by_door.sql",
        ("access", 1): "0001_credentials.sql", ("access", 2): "0002_sync.sql",
        ("access", 3): "0003_recipients.sql", ("access", 4): "0004_signed_keys.sql",
        ("access", 5): "0005_phone_keys.sql",
        ("cloud", 1): "0001_outbox.sql", ("cloud", 2): "0002_outbox_folds.sql",
        ("sip", 1): "0001_calls.sql", ("sip", 2): "0002_call_video.sql", ("camera", 1): "0001_captures.sql",
        ("face", 1): "0001_face.sql", ("face", 2): "0002_face_photos.sql",
    }


def test_every_legacy_statement_moved_to_exactly_one_folder():
    old = sorted(s for f in LEGACY_FILES for s in _statements(f.read_text(encoding="utf-8")))
    new = sorted(s for m in shipped() if m.legacy is not None for s in _statements(m.sql))
    assert new == old


def test_fresh_database_has_exactly_the_old_schema(tmp_path, legacy_schema):
    store = Store(tmp_path / "new.db")
    store.open()
    assert schema(store.db) == legacy_schema
    assert has_tables_since_the_split(store.db)
    assert store.schema_version == len(shipped())
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == PER_FEATURE
    store.close()


@pytest.mark.parametrize("version", range(0, 8))
def test_a_database_of_the_single_list_upgrades_in_place(tmp_path, legacy_schema, version):
    path = tmp_path / "old.db"
    legacy_database(path, version)
    store = Store(path)
    store.open()  # re-running an applied file would fail (table exists, duplicate column)
    assert schema(store.db) == legacy_schema
    assert has_tables_since_the_split(store.db)
    ran = {f"{f}/{n}" for f, n in _RUN}
    expected = {m.label for m in shipped() if m.legacy is None or m.legacy > version}
    assert ran == expected, "exactly the files the old list had not applied ran"
    if version >= 1:
        assert store.door_log_count() == 1
    if version >= 3:
        assert store.db.execute("SELECT name FROM users").fetchall() == [("Ann",)]
    if version >= 4:
        assert store.db.execute("SELECT value FROM counters WHERE name = 'outbox_dropped'").fetchone() == (5,)
    store.close()
    again = Store(path)
    again.open()
    assert again.migrate() == []  # recorded: the next start applies nothing
    again.close()


_RUN: dict[tuple[str, str], bool] = {}


@pytest.fixture(autouse=True)
def _watch_runs(monkeypatch):
    """Record which migrations ``Runner._apply`` actually executes (adopted ones are only recorded)."""
    _RUN.clear()
    original = Runner._apply

    def apply(self: Runner, migration: Migration) -> None:
        _RUN[(migration.feature, migration.name)] = True
        original(self, migration)

    monkeypatch.setattr(Runner, "_apply", apply)


def test_the_old_code_refuses_an_upgraded_database(tmp_path):
    """The pre-split runner compared user_version with its 7 files: an adopted database is 'newer'."""
    store = Store(tmp_path / "db.sqlite")
    store.open()
    store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] > len(LEGACY_FILES)


def test_a_newer_legacy_database_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(StoreError, match="newer"):
        Store(path).open()


def test_a_database_with_a_migration_not_shipped_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.open()
    store.db.execute("INSERT INTO schema_migrations VALUES ('face', 3, '0003_faces.sql', 'now')")
    store.close()
    with pytest.raises(StoreError, match=r"face/0003.*newer"):
        Store(path).open()


def _m(feature: str, number: int, header: str = "") -> Migration:
    return read_migration(feature, f"{number:04d}_x.sql", f"{header}CREATE TABLE {feature}{number} (a);\n")


def test_a_folder_runs_in_its_own_order_and_after_what_it_names():
    migrations = [_m("zeta", 1), _m("zeta", 2), _m("alpha", 1, "-- after: zeta/0002\n"), _m("alpha", 2)]
    order = [m.label for m in plan(migrations, set())]
    assert order == ["zeta/0001_x.sql", "zeta/0002_x.sql", "alpha/0001_x.sql", "alpha/0002_x.sql"]
    assert [m.label for m in plan(migrations, {("zeta", 1)})] == ["zeta/0002_x.sql", "alpha/0001_x.sql",
                                                                  "alpha/0002_x.sql"]


def test_migrations_that_wait_for_each_other_stop_the_runner():
    migrations = [_m("a", 1, "-- after: b/0001\n"), _m("b", 1, "-- after: a/0001\n")]
    with pytest.raises(MigrationError, match="wait for each other"):
        plan(migrations, set())


def test_a_gap_or_an_unknown_after_is_refused(tmp_path, monkeypatch):
    from doorphoned.core import migrate

    with pytest.raises(MigrationError, match="not 1, 2, 3"):
        migrate.check([_m("a", 1), _m("a", 3)])
    with pytest.raises(MigrationError, match="not shipped"):
        migrate.check([_m("a", 1, "-- after: b/0004\n")])
    with pytest.raises(MigrationError, match="NNNN_name"):
        read_migration("a", "1_x.sql", "")


def test_a_header_after_the_first_statement_is_not_a_dependency():
    migration = read_migration("a", "0001_x.sql", "-- legacy: 3\nCREATE TABLE t (a);\n-- after: b/0001\n")
    assert migration.after == () and migration.legacy == 3


def test_a_failing_migration_rolls_the_whole_start_back_and_is_named(tmp_path):
    db = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    broken = [_m("a", 1), read_migration("a", "0002_bad.sql", "CREATE TABLE t1 (a);\nCREATE TABLE a1 (a);\n")]
    with pytest.raises(MigrationError, match=r"a/0002_bad\.sql failed"):
        Runner(db, broken).run()
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == [], "one start is one transaction"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert Runner(db, broken[:1]).run() == ["a/0001_x.sql"]


def test_the_shipped_files_end_the_single_list_at_7():
    from doorphoned.core.migrate import legacy_max

    assert legacy_max(shipped()) == len(LEGACY_FILES)


def test_sql_left_at_the_package_root_stops_the_runner(tmp_path):
    """A migration written for the old single list (doorphoned/migrations/0008_*.sql) is not silently skipped."""
    package = tmp_path / "pkg"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "0008_captures.sql").write_text("CREATE TABLE captures (a);\n")
    (package / "relay" / "migrations").mkdir(parents=True)
    (package / "relay" / "migrations" / "0001_x.sql").write_text("CREATE TABLE x (a);\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(MigrationError, match="belongs in the migrations/ folder"):
            shipped("pkg")
        (package / "migrations" / "0008_captures.sql").unlink()
        assert [m.label for m in shipped("pkg")] == ["relay/0001_x.sql"]
        (package / "relay" / "migrations" / "0001_x.sql").unlink()
        with pytest.raises(MigrationError, match="installation is incomplete"):
            shipped("pkg")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pkg", None)
