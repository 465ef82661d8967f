"""Schema migrations owned by the feature folders, applied by one runner.

Each folder that owns tables keeps them in ``<folder>/migrations/NNNN_name.sql`` (``core/``,
``relay/``, ``access/``, ``cloud/``, ``sip/``, ...): numbered 1, 2, 3, ... within the folder,
applied in that order (everything one start applies is one transaction), and recorded per folder in the
``schema_migrations`` table. Adding a migration is adding the next-numbered file to its folder;
nothing else lists it (the runner finds every ``migrations/`` folder in the package).

Two header comments, before the first statement, tie a file to the rest:

- ``-- after: relay/0001`` (any number of them): this file needs another folder's migration first
  (``access/0001`` adds columns to the door log, so it comes after ``relay/0001``). Within a folder
  the order is the numbering; across folders only these lines order anything, and a file that
  names a migration nobody ships stops the runner instead of guessing.
- ``-- legacy: N``: this file was (part of) ``doorphoned/migrations/000N_*.sql`` of the single
  numbered list that recorded its progress in ``PRAGMA user_version`` (up to 7: the highest ``legacy``
  shipped). A database made
  by that code is adopted in place: every file whose legacy number is at most its ``user_version``
  is recorded as applied, without running it again. New files carry no ``legacy`` line.

Pending migrations run in a fixed order: legacy files in their old order first (a fresh database
is built exactly as the old list built it), then the others by folder and number; a file waits
until its ``after`` lines are applied. Once adopted, ``user_version`` is set to ``PER_FEATURE``,
so a doorphoned from before the split refuses the database ("newer") instead of re-running it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from importlib.abc import Traversable

PACKAGE = "doorphoned"
PER_FEATURE = 1000  # user_version once the per-folder record is in charge
_CREATE = re.compile(r"CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_DROP = re.compile(r"DROP\s+(?:TABLE|INDEX)\s+(?:IF\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_FEATURE = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_MAX_NUMBER = 9999
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_AFTER = re.compile(r"^--\s*after:\s*([a-z_][a-z0-9_]*)/(\d{4})\b")
_LEGACY = re.compile(r"^--\s*legacy:\s*(\d+)\s*$")
RECORD = """CREATE TABLE IF NOT EXISTS schema_migrations (
    feature  TEXT    NOT NULL,
    number   INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    applied  TEXT    NOT NULL,
    PRIMARY KEY (feature, number)
)"""


class MigrationError(RuntimeError):
    """The shipped migrations or the database's record of them cannot be reconciled."""


@dataclass(frozen=True)
class Migration:
    feature: str
    number: int
    name: str
    sql: str
    after: tuple[tuple[str, int], ...] = ()
    legacy: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.feature, self.number)

    @property
    def label(self) -> str:
        return f"{self.feature}/{self.name}"


def read_migration(feature: str, name: str, sql: str) -> Migration:
    """One file with its header lines (``-- after:``, ``-- legacy:``) read."""
    match = _FILE.match(name)
    if match is None:
        raise MigrationError(f"{feature}/migrations/{name}: not named NNNN_name.sql")
    after: list[tuple[str, int]] = []
    legacy = None
    for line in sql.splitlines():
        if not line.startswith("--"):
            if line.strip():
                break  # headers end at the first statement
            continue
        if found := _AFTER.match(line):
            after.append((found.group(1), int(found.group(2))))
        elif found := _LEGACY.match(line):
            legacy = int(found.group(1))
    return Migration(feature, int(match.group(1)), name, sql, tuple(after), legacy)


def shipped(package: str = PACKAGE) -> list[Migration]:
    """Every ``<folder>/migrations/*.sql`` of the package, checked: numbered 1, 2, 3 in each folder,
    every ``after`` naming a shipped migration."""
    found: list[Migration] = []
    stray = resources.files(package).joinpath("migrations")
    if stray.is_dir() and any(item.name.endswith(".sql") for item in stray.iterdir()):
        raise MigrationError(f"{package}/migrations/ holds SQL files: each belongs in the migrations/ folder of "
                             "the feature that owns its tables (docs/ARCHITECTURE.md, 'Adding a migration')")
    for folder in sorted(resources.files(package).iterdir(), key=lambda t: t.name):
        found.extend(_folder(folder))
    if not found:  # an install without its package data would otherwise start on an empty schema
        raise MigrationError(f"no migrations found in {package}/*/migrations/: the installation is incomplete")
    check(found)
    return found


def _folder(folder: Traversable) -> list[Migration]:
    directory = folder.joinpath("migrations")
    if not folder.is_dir() or not directory.is_dir():
        return []
    return sorted((read_migration(folder.name, item.name, item.read_text(encoding="utf-8"))
                   for item in directory.iterdir() if item.name.endswith(".sql")), key=lambda m: m.number)


def check(migrations: Iterable[Migration]) -> None:
    by_feature: dict[str, list[int]] = {}
    keys = set()
    for migration in migrations:
        by_feature.setdefault(migration.feature, []).append(migration.number)
        keys.add(migration.key)
    for feature, numbers in by_feature.items():
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise MigrationError(f"{feature}/migrations: numbers {sorted(numbers)} are not 1, 2, 3, ...")
    for migration in migrations:
        for dep in migration.after:
            if dep not in keys:
                raise MigrationError(f"{migration.label} comes after {dep[0]}/{dep[1]:04d}, which is not shipped")


def plan(migrations: list[Migration], applied: set[tuple[str, int]]) -> list[Migration]:
    """The pending migrations in the order they run (see the module docstring)."""
    last = legacy_max(migrations)
    pending = sorted((m for m in migrations if m.key not in applied),
                     key=lambda m: (m.legacy if m.legacy is not None else last + 1, m.feature, m.number))
    done = set(applied)
    order: list[Migration] = []
    while pending:
        ready = next((m for m in pending if _ready(m, done)), None)
        if ready is None:
            raise MigrationError("migrations wait for each other: " + ", ".join(m.label for m in pending))
        pending.remove(ready)
        done.add(ready.key)
        order.append(ready)
    return order


def legacy_max(migrations: Iterable[Migration]) -> int:
    """The last number of the single list these files came from (7: ``0007_outbox_folds.sql``)."""
    return max((m.legacy for m in migrations if m.legacy is not None), default=0)


def _ready(migration: Migration, done: set[tuple[str, int]]) -> bool:
    previous = (migration.feature, migration.number - 1)
    return (migration.number == 1 or previous in done) and all(dep in done for dep in migration.after)


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file, one by one (``executescript`` would commit on its own)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise MigrationError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:60]!r}")
    return statements


@dataclass
class Runner:
    """Applies ``migrations`` to ``db`` (an autocommit connection) and keeps the per-folder record."""

    db: sqlite3.Connection
    migrations: list[Migration] = field(default_factory=shipped)

    def run(self) -> list[str]:
        """Adopt a legacy database if needed, then apply what it has not seen; the labels applied.

        All of it is one transaction: a start either upgrades the database completely or leaves it
        as it was (a failing migration, a damaged record: one line saying so, nothing half-applied).
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            done = self._run()
            self.db.execute("COMMIT")
        except (MigrationError, sqlite3.Error) as exc:
            self.db.execute("ROLLBACK")
            if isinstance(exc, MigrationError):
                raise
            raise MigrationError(f"cannot read the applied migrations: {exc}") from exc
        return done

    def _run(self) -> list[str]:
        self._adopt()
        applied = self.applied()
        unknown = sorted(applied - {m.key for m in self.migrations})
        if unknown:
            feature, number = unknown[0]
            raise MigrationError(f"database has migration {feature}/{number:04d}, which this doorphoned "
                                 "does not ship: it is newer than this doorphoned")
        done = []
        for migration in plan(self.migrations, applied):
            self._apply(migration)
            done.append(migration.label)
        self._verify()
        return done

    def _verify(self) -> None:
        """Every table and index the applied migrations made (and none dropped since) exists.

        The record is trusted to skip files, so a damaged database (a ``user_version`` or a row that
        claims more than the file holds) would otherwise start with tables missing and fail later, at
        a door; it stops here instead, naming the first one missing."""
        expected: dict[str, str] = {}
        for migration in plan(self.migrations, set()):  # every shipped file, in the order they run
            for statement in split_statements(migration.sql):
                if made := _CREATE.match(statement):
                    expected[made.group(1).lower()] = migration.label
                elif gone := _DROP.match(statement):
                    expected.pop(gone.group(1).lower(), None)
        present = {str(name).lower() for (name,) in self.db.execute("SELECT name FROM sqlite_master")}
        missing = sorted(name for name in expected if name not in present)
        if missing:
            raise MigrationError(f"the database is damaged: {missing[0]} (from {expected[missing[0]]}) is missing "
                                 "though its migration is recorded as applied")

    def applied(self) -> set[tuple[str, int]]:
        found = set()
        for feature, number in self.db.execute("SELECT feature, number FROM schema_migrations"):
            if not (isinstance(feature, str) and _FEATURE.fullmatch(feature) and isinstance(number, int)
                    and 1 <= number <= _MAX_NUMBER):
                raise MigrationError(f"schema_migrations has a damaged row: feature {repr(feature)[:60]}, "
                                     f"number {repr(number)[:30]}")
            found.add((feature, number))
        return found

    def _adopt(self) -> None:
        """Create the record; a database of the single numbered list gets its progress copied into it."""
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version == PER_FEATURE:
            return
        last = legacy_max(self.migrations)
        if version < 0:
            raise MigrationError(f"database schema {version} is not a schema version: the database is damaged")
        if version > last:
            raise MigrationError(f"database schema {version} is newer than this doorphoned ({last})")
        self.db.execute(RECORD)
        for migration in self.migrations:
            if migration.legacy is not None and migration.legacy <= version:
                self._record(migration)
        self.db.execute(f"PRAGMA user_version = {PER_FEATURE}")

    def _apply(self, migration: Migration) -> None:
        try:
            for statement in split_statements(migration.sql):
                self.db.execute(statement)
        except sqlite3.Error as exc:
            raise MigrationError(f"migration {migration.label} failed: {exc}") from exc
        self._record(migration)

    def _record(self, migration: Migration) -> None:
        self.db.execute("INSERT INTO schema_migrations (feature, number, name, applied) VALUES (?, ?, ?, ?)",
                        (migration.feature, migration.number, migration.name, datetime.now(UTC).isoformat()))
