"""The state store: one SQLite file under the state directory.

WAL mode lets readers (``log doors``) run beside the writer; ``synchronous=FULL`` makes every
acknowledged record survive power loss, which is the rule for the door log (DESIGN §4). Schema
changes are numbered SQL files in ``migrations/``, applied in order and recorded in
``PRAGMA user_version``, so a unit upgraded across several releases walks every step.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

DB_NAME = "doorphoned.db"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class DoorLogEntry:
    ts: datetime
    kind: str
    door: int | None = None
    credential: str | None = None
    subject: str | None = None
    granted: bool | None = None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    key_id: str | None = None
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ts"] = self.ts.isoformat()
        return data


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every shipped migration, in order; numbers must be 1, 2, 3, ..."""
    found = []
    for item in resources.files("doorphoned").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(item.name)
        if match:
            found.append((int(match.group(1)), item.name, item.read_text(encoding="utf-8")))
    found.sort()
    for expected, (number, name, _) in enumerate(found, start=1):
        if number != expected:
            raise StoreError(f"migration {name} is out of sequence (expected {expected:04d})")
    return found


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
        raise StoreError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:60]!r}")
    return statements


class Store:
    """Synchronous SQLite access, used only from the asyncio loop's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        self._db = db
        self.migrate()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen; each in its own transaction."""
        applied = []
        current = self.schema_version
        shipped = migrations()
        if current > len(shipped):
            raise StoreError(f"database schema {current} is newer than this doorphoned ({len(shipped)})")
        for number, name, sql in shipped[current:]:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in split_statements(sql):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.db.execute("ROLLBACK")
                raise StoreError(f"migration {name} failed: {exc}") from exc
            applied.append(name)
        return applied

    # ---- door log
    def append_door_log(self, entry: DoorLogEntry) -> int:
        """Persist one entry durably (committed, fsynced) and return its id."""
        cursor = self.db.execute(
            "INSERT INTO door_log (ts, kind, door, credential, subject, granted, reason, detail, user_id, key_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.ts.isoformat(), entry.kind, entry.door, entry.credential, entry.subject,
             None if entry.granted is None else int(entry.granted), entry.reason,
             json.dumps(entry.detail, separators=(",", ":")), entry.user_id, entry.key_id),
        )
        return int(cursor.lastrowid or 0)

    def door_log(self, limit: int = 100, door: int | None = None, kind: str | None = None) -> list[DoorLogEntry]:
        """Newest entries first."""
        query = ("SELECT id, ts, kind, door, credential, subject, granted, reason, detail, user_id, key_id"
                 " FROM door_log")
        where: list[str] = []
        args: list[object] = []
        if door is not None:
            where.append("door = ?")
            args.append(door)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [self._entry(row) for row in self.db.execute(query, args)]

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> DoorLogEntry:
        return DoorLogEntry(
            id=row[0], ts=datetime.fromisoformat(row[1]), kind=row[2], door=row[3], credential=row[4],
            subject=row[5], granted=None if row[6] is None else bool(row[6]), reason=row[7],
            detail=json.loads(row[8]), user_id=row[9], key_id=row[10],
        )

    def door_log_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM door_log").fetchone()[0])

    def prune_door_log(self, keep: int) -> int:
        """Drop the oldest entries beyond ``keep``; returns how many went."""
        cursor = self.db.execute(
            "DELETE FROM door_log WHERE id <= (SELECT id FROM door_log ORDER BY id DESC LIMIT 1 OFFSET ?)", (keep,)
        )
        return cursor.rowcount

    def quick_check(self) -> str:
        return str(self.db.execute("PRAGMA quick_check").fetchone()[0])

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())
