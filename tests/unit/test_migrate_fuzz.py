"""Property fuzz of the migration runner's outside input: a damaged state database.

The SQL files are ours; the database is not (a copied, half-restored or hand-edited state dir). Whatever its
``user_version`` and its ``schema_migrations`` rows, opening it either ends with every shipped migration
recorded exactly once and the schema of a fresh database, or fails with one StoreError line; rows already
stored are never lost, and a refused database is left as it was.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.core.migrate import RECORD, shipped
from doorphoned.core.store import Store, StoreError
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text
from tests.unit.test_migrate import legacy_database, schema

TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None  # thousands of small databases: keep them off the disk

SHIPPED = {m.key for m in shipped()}
features = st.one_of(st.sampled_from(sorted({f for f, _ in SHIPPED} | {"face", "migrations", ""})), hostile_text,
                     st.integers(), st.none(), st.binary(max_size=8))
numbers = st.one_of(st.integers(-3, 12), hostile_numbers.filter(lambda n: not isinstance(n, int) or
                                                                abs(n) < 2**63), hostile_text, st.none())
rows = st.lists(st.tuples(features, numbers, hostile_text | st.none()), max_size=6)
# The record as the runner makes it, without its key (duplicate rows), with columns missing, or not a table.
SHAPES = {"runner": RECORD, "no key": "CREATE TABLE schema_migrations (feature, number, name, applied)",
          "two columns": "CREATE TABLE schema_migrations (feature, number)",
          "a view": "CREATE VIEW schema_migrations AS SELECT 'relay' AS feature, 1 AS number"}
versions = st.one_of(st.integers(0, 8), st.sampled_from([1000, 999, 1001, -1, 2**31 - 1, -(2**31)]))


def _fresh_schema() -> list[tuple[str, str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "db")
        store.open()
        try:
            return schema(store.db)
        finally:
            store.close()


FRESH = _fresh_schema()


def _damage(path: Path, legacy: int, version: int, record: str | None, bad_rows: list[tuple[object, ...]]) -> None:
    legacy_database(path, legacy)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if record is not None:
            db.execute(SHAPES[record])
            for feature, number, name in bad_rows if record != "a view" else []:
                values = (_sql(feature), _sql(number), _sql(name) if name is not None else "", "x")
                columns = 2 if record == "two columns" else 4
                db.execute(f"INSERT OR IGNORE INTO schema_migrations VALUES ({', '.join('?' * columns)})",
                           values[:columns])
        db.execute(f"PRAGMA user_version = {version}")
    finally:
        db.close()


def _sql(value: object) -> object:
    """What sqlite3 can bind: huge ints as text, lone surrogates as bytes (both reach the runner as damage)."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
    return value


def _snapshot(path: Path) -> tuple[object, ...]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        counts = tuple(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)
        return (db.execute("PRAGMA user_version").fetchone()[0], tuple(schema(db)), counts)


@settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(legacy=st.integers(0, 7), version=versions, record=st.none() | st.sampled_from(sorted(SHAPES)), bad_rows=rows)
def test_a_damaged_database_opens_completely_or_is_refused_in_one_line(legacy, version, record, bad_rows):
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        path = Path(tmp) / "db"
        _damage(path, legacy, version, record, bad_rows)
        before = _snapshot(path)
        store = Store(path)
        try:
            store.open()
        except StoreError as exc:
            message = str(exc)
            assert "\n" not in message and message.isprintable() and len(message) < 400, message
            store.close()
            assert _snapshot(path) == before, "a refused database is left as it was"
            return
        try:
            recorded = store.db.execute("SELECT feature, number FROM schema_migrations").fetchall()
            assert sorted(recorded) == sorted(SHIPPED)
            assert schema(store.db) == FRESH
            if legacy >= 1:
                assert store.door_log_count() == 1
        finally:
            store.close()
