"""The state store: one SQLite file under the state directory.

WAL mode lets readers (``log doors``) run beside the writer; ``synchronous=FULL`` makes every
acknowledged record survive power loss, which is the rule for the door log (DESIGN §4). Schema
changes are numbered SQL files in each feature folder's ``migrations/``, applied in order and
recorded per folder by ``core/migrate.py``, so a unit upgraded across several releases walks every step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from doorphoned.core.migrate import MigrationError, Runner

log = logging.getLogger(__name__)

DB_NAME = "doorphoned.db"
CHECKPOINT_INTERVAL = 0.25  # seconds between the background checkpointer's passes
RESTART_FRAMES = 4096  # a WAL this long (16 MB) after a passive pass is restarted (a short wait for writers)
SETTLE_FRAMES = 1024  # a WAL this long (4 MB) makes a bulk writer wait for a pass (Store.settle_wal)
WAL_SIZE_LIMIT = 32 * 2**20  # bytes the WAL file is truncated to when it restarts


class StoreError(RuntimeError):
    pass


COLLAPSIBLE = frozenset({"locked_out", "unknown", "malformed", "replayed"})  # replayed: a phone token re-sent
COLLAPSE_LOOKBACK = 8  # a door's last entries searched for the one a refusal repeats
COLLAPSE_GAP = 60.0  # seconds since the last repeat within which a refusal still repeats it
COLLAPSE_SPAN = 3600.0  # an entry collects repeats for at most an hour: a long attack stays visible in time


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


@contextmanager
def joined_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One atomic change (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error); inside a transaction
    already open (a sync, a bulk load) it joins that one, whose owner commits."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Store:
    """Synchronous SQLite access, used only from the asyncio loop's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None

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
        self.stop_checkpointer()
        if self._db is not None:
            self._db.close()
            self._db = None

    def start_checkpointer(self) -> None:
        """Move WAL checkpoints off this connection (the loop's) to a thread with its own connection.

        SQLite checkpoints automatically inside the COMMIT that pushes the WAL past 1,000 pages: on the
        loop, that commit then copies megabytes into the database and fsyncs it, and every door waits
        (50-300 ms stalls while a large snapshot applied, issue 9). The thread's passive checkpoints
        never block a writer or a reader, and SQLite releases the GIL while it copies and syncs.
        """
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(self.path, CHECKPOINT_INTERVAL)
            self._checkpointer.start()
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")

    async def settle_wal(self) -> None:
        """For a bulk writer between two transactions (a snapshot's slices): when the WAL has grown past
        ``SETTLE_FRAMES``, wait for a checkpoint pass in a thread. With no bulk write meanwhile the pass
        completes and the next write rewinds the WAL, so the checkpointer never has to make the loop
        wait with a RESTART. Doors keep working meanwhile: the loop is free."""
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer.wal_frames >= SETTLE_FRAMES:
            await asyncio.to_thread(checkpointer.pass_now)

    async def flush_wal(self) -> None:
        """For a bulk writer that commits without fsync (``synchronous=NORMAL``): sync the WAL in a thread.

        Otherwise the next FULL commit on the loop (a door grant's record, which must be durable before
        the relay moves) flushes everything the bulk writer wrote since the last sync, megabytes at a
        time: the door waits for the disk. Flushed here, off the loop, that commit syncs little more than
        its own pages."""
        wal = Path(f"{self.path}-wal")

        def sync() -> None:
            try:
                fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        await asyncio.to_thread(sync)

    def stop_checkpointer(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
            if self._db is not None:
                self._db.execute("PRAGMA wal_autocheckpoint=1000")  # SQLite's default again

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    @property
    def schema_version(self) -> int:
        """How many migrations this database has applied (every folder's together)."""
        return int(self.db.execute("SELECT count(*) FROM schema_migrations").fetchone()[0])

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen (core/migrate.py); the ones applied."""
        try:
            applied = Runner(self.db).run()
        except MigrationError as exc:
            raise StoreError(str(exc)) from exc
        if applied:
            log.info("schema migrations applied: %s", ", ".join(applied))
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

    def collapse_refusal(self, entry: DoorLogEntry) -> int | None:
        """Fold a repeated refusal into the recent entry it repeats; returns that entry's id, or None when
        it starts a new one.

        Why: a keypad (or a card emulator) can produce thousands of refusals a minute; one entry each
        would bury everything else and, with pruning, push alarms out. A refusal repeats an entry when it
        has the same door, credential, subject, reason (``locked_out``, ``unknown``, ``malformed``, ``replayed``: a
        recorded BLE advert re-sent in a loop) and detail, is
        among that door's last few entries, within ``COLLAPSE_GAP`` seconds of its last repeat and within
        ``COLLAPSE_SPAN`` of its first: the entry then carries ``count`` and ``first``/``last`` times.
        An entry marked ``closed`` (:meth:`close_fold`: its run was summarised to the cloud) takes no more.
        """
        if entry.kind != "access" or entry.granted or entry.reason not in COLLAPSIBLE or entry.door is None:
            return None
        rows = self.db.execute(
            "SELECT id, ts, kind, credential, subject, granted, reason, detail FROM door_log WHERE door = ?"
            " ORDER BY id DESC LIMIT ?", (entry.door, COLLAPSE_LOOKBACK)).fetchall()
        for row_id, ts, kind, credential, subject, granted, reason, detail_json in rows:
            if (kind, credential, subject, granted, reason) != ("access", entry.credential, entry.subject, 0,
                                                               entry.reason):
                continue
            detail = json.loads(detail_json)
            if detail.get("detail") != entry.detail.get("detail") or detail.get("closed"):
                continue  # another kind of malformed entry, or a run whose summary the cloud already has
            first = datetime.fromisoformat(ts)
            last = datetime.fromisoformat(detail.get("last", ts))
            now = entry.ts
            if (now - last).total_seconds() > COLLAPSE_GAP or (now - first).total_seconds() > COLLAPSE_SPAN:
                return None
            detail.update(count=int(detail.get("count", 1)) + 1, first=ts, last=now.isoformat())
            self.db.execute("UPDATE door_log SET detail = ? WHERE id = ?",
                            (json.dumps(detail, separators=(",", ":")), row_id))
            return int(row_id)
        return None

    def close_fold(self, log_id: int) -> DoorLogEntry | None:
        """End the run of refusals folded into entry ``log_id``: it is marked ``closed`` and takes no more
        repeats, so the count the cloud is told at the end of the run stays the entry's count. Returns the
        entry as closed, or None when it is gone (pruned)."""
        row = self.db.execute(
            "SELECT id, ts, kind, door, credential, subject, granted, reason, detail, user_id, key_id"
            " FROM door_log WHERE id = ?", (log_id,)).fetchone()
        if row is None:
            return None
        entry = self._entry(row)
        entry.detail["closed"] = True
        self.db.execute("UPDATE door_log SET detail = ? WHERE id = ?",
                        (json.dumps(entry.detail, separators=(",", ":")), log_id))
        return entry

    def door_log_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM door_log").fetchone()[0])

    def prune_door_log(self, keep: int, keep_alarms: int | None = None) -> int:
        """Drop the oldest ordinary entries beyond ``keep`` and the oldest alarms and lock faults beyond
        ``keep_alarms`` (default: ``keep``); returns how many went.

        Two budgets, so that no amount of ordinary traffic (someone at the keypad, a busy door) can push
        an alarm out of the log: ordinary entries only ever make room among themselves.
        """
        ordinary = self.db.execute(
            "DELETE FROM door_log WHERE kind NOT IN ('alarm', 'lock_fault') AND id <= (SELECT id FROM door_log"
            " WHERE kind NOT IN ('alarm', 'lock_fault') ORDER BY id DESC LIMIT 1 OFFSET ?)", (keep,)).rowcount
        alarms = self.db.execute(
            "DELETE FROM door_log WHERE kind IN ('alarm', 'lock_fault') AND id <= (SELECT id FROM door_log"
            " WHERE kind IN ('alarm', 'lock_fault') ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (keep if keep_alarms is None else keep_alarms,)).rowcount
        removed = ordinary + alarms
        return removed

    def quick_check(self) -> str:
        return str(self.db.execute("PRAGMA quick_check").fetchone()[0])

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())


class Checkpointer:
    """A thread that copies the WAL into the database every ``CHECKPOINT_INTERVAL`` (passive mode).

    Passive: it copies what no reader still needs and never waits for a lock, so it does not delay the
    loop's transactions (the exception, a WAL over 16 MB that steady writes kept from rewinding, is in
    :meth:`_checkpoint`). Its connection is ``synchronous=FULL``: the WAL is synced before the copy and
    the database after it, so a power cut during a checkpoint loses nothing committed.
    A pass with nothing new to copy only reads the WAL index (no I/O, no sync).
    """

    def __init__(self, path: Path, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.passes = 0
        self.wal_frames = 0  # the WAL's length after the last pass (0: complete, the next writer rewinds it)
        self._db: sqlite3.Connection | None = None
        self._failing = False  # logged once per run of failures, not every pass
        self._stop = threading.Event()
        self._lock = threading.Lock()  # held by a pass, and by paused()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No pass runs inside this block (tests: see that the writing connection does not checkpoint)."""
        with self._lock:
            yield

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=0")
            self._db = db
            while not self._stop.wait(self.interval):
                self._pass(db)
            self._pass(db)  # what the last interval wrote, before the loop's connection closes
        finally:
            with self._lock:
                self._db = None
                db.close()

    def pass_now(self) -> None:
        """(a worker thread) One pass at once, e.g. while a bulk writer holds back so that it completes."""
        db = self._db
        if db is not None and not self._stop.is_set():
            self._pass(db, settling=True)

    def _pass(self, db: sqlite3.Connection, settling: bool = False) -> None:
        try:
            with self._lock:
                frames = self._checkpoint(db, settling)
        except sqlite3.Error as exc:  # a full disk, say: the next pass tries again; SQLite's data is intact
            if not self._failing:
                log.warning("store: WAL checkpoint failed (retried every %.2f s): %s", self.interval, exc)
            self._failing = True
            return
        if self._failing:
            log.info("store: WAL checkpoints work again")
        self._failing = False
        self.passes += 1
        self.wal_frames = frames

    @staticmethod
    def _checkpoint(db: sqlite3.Connection, settling: bool = False) -> int:
        """A passive pass; if the WAL is still long after it, a RESTART one. Returns the WAL's length, or 0
        when the next writer will rewind it (after a RESTART, or a complete pass while a bulk writer waits).

        Only a writer that starts after a *complete* checkpoint rewinds the WAL to its beginning. Under a
        steady stream of writes (a snapshot's slices every few ms) passive passes never complete, and the
        WAL grew to 1.4 GB during a 100,000-user snapshot (every page read then searched a longer index).
        RESTART waits (up to 50 ms) for the writer of the moment, copies the few frames written since the
        passive pass and rewinds the WAL; new writers wait for it meanwhile: a short stall once per 16 MB.
        """
        busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames < RESTART_FRAMES:
            return 0 if settling and not busy and copied == frames else int(frames)
        db.execute("PRAGMA busy_timeout=50")
        try:
            busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            db.execute("PRAGMA busy_timeout=0")
        return int(frames) if busy else 0
