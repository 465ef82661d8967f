"""The capture store: JPEG snapshots under ``<state>/captures/`` and their log in the state database.

Why the order of writes: a capture is a file *and* a row, and a kill -9 or a power cut can fall between
them. The file is written to a hidden temp name, fsynced, renamed into place and the directory fsynced;
only then does its row commit (``synchronous=FULL``, like every record the store keeps). So a row never
names a half-written JPEG. The other gaps (a renamed file whose row never committed, a retention pass
whose rows went before their files) leave files without rows, which :meth:`CaptureStore.sweep` removes at
start, together with any row whose file is missing. Retention runs before every write, and a capture
that would take the free space below ``min_free_bytes`` is refused with the figures: the disk never
fills with pictures, whatever triggers fire.

Everything that names a capture (trigger, door, related log entry) may come from outside (the cloud, the
control socket): it is checked before any file exists and refused with a clear :class:`CaptureError`.
Files are 0600, the folder 0700: snapshots of visitors are personal data.

Threads: :meth:`CaptureStore.encode` and :meth:`CaptureStore.write` touch no database (a host on asyncio
runs them in a worker thread: :meth:`CaptureStore.take_async` does); everything that touches the database
(:meth:`reserve`, :meth:`record`, :meth:`recent`, :meth:`sweep`) runs where the
:class:`~doorphoned.core.store.Store` is used, the loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from doorphoned.camera.capture_files import DIR_NAME, MAX_SIDE, CaptureError, Encoded
from doorphoned.core import files
from doorphoned.core.clock import Clock, SystemClock
from doorphoned.core.frames import Frame
from doorphoned.core.store import Store

log = logging.getLogger(__name__)

AUTOMATIC = ("call", "granted", "refused", "forced_open", "motion", "package")
TRIGGERS = ("manual", *AUTOMATIC)
MAX_DOOR = 16
MAX_LOG_ID = 2**63 - 1
RETENTION_BATCH = 256
_FILE_NAME = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}\.jpg$")
SnapshotRequest = Callable[..., Awaitable[dict[str, Any]]]  # CameraFeature.request


class CaptureNotFoundError(LookupError):
    """No capture with that id (never taken, or gone with retention)."""


@dataclass(frozen=True)
class CaptureSettings:
    """Which events take a capture automatically, how long captures are kept, and how they are encoded.

    ``triggers`` are the automatic ones switched on (``manual`` is always allowed); retention keeps at most
    ``keep_count`` captures, ``keep_bytes`` of JPEG and nothing older than ``keep_days``, the oldest going
    first; no capture is written when it would leave less than ``min_free_bytes`` free on the state disk.
    """

    triggers: frozenset[str] = frozenset(AUTOMATIC)
    keep_count: int = 1000
    keep_bytes: int = 200 * 2**20
    keep_days: float = 30.0
    jpeg_quality: int = 85
    min_free_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if not isinstance(self.triggers, frozenset) or not self.triggers <= set(AUTOMATIC):
            raise CaptureError(f"triggers must be a subset of {', '.join(AUTOMATIC)}")
        _check_int("keep_count", self.keep_count, 1, 1_000_000)
        _check_int("keep_bytes", self.keep_bytes, 1024, 2**50)
        _check_int("jpeg_quality", self.jpeg_quality, 10, 100)
        _check_int("min_free_bytes", self.min_free_bytes, 0, 2**50)
        days = self.keep_days
        if isinstance(days, bool) or not isinstance(days, int | float) or not (
                0 < days <= 3650 and (isinstance(days, int) or math.isfinite(days))):  # a huge int: no float()
            raise CaptureError("keep_days must be a number within 0..3650 (more than 0)")

    @classmethod
    def from_dict(cls, data: object) -> CaptureSettings:
        """Settings from untrusted config/MQTT data; unknown keys and wrong types are refused by name."""
        if not isinstance(data, Mapping):
            raise CaptureError("capture settings must be a table")
        known = ("triggers", "keep_count", "keep_bytes", "keep_days", "jpeg_quality", "min_free_bytes")
        unknown = sorted(str(k)[:40] for k in data if k not in known)
        if unknown:
            raise CaptureError(f"unknown capture setting {unknown[0]!r}")
        values: dict[str, Any] = {k: data[k] for k in known[1:] if k in data}
        if "triggers" in data:
            triggers = data["triggers"]
            if not isinstance(triggers, list | tuple) or len(triggers) > len(AUTOMATIC) * 4:
                raise CaptureError(f"triggers must be a list of names from {', '.join(AUTOMATIC)}")
            for name in triggers:
                if not isinstance(name, str) or name not in AUTOMATIC:
                    raise CaptureError(f"unknown capture trigger {_show(name)} (use {', '.join(AUTOMATIC)})")
            values["triggers"] = frozenset(triggers)
        return cls(**values)


@dataclass(frozen=True)
class Capture:
    """One kept capture, as listed by ``doorphonectl log captures`` and sent by ``capture.get``."""

    id: int
    ts: datetime
    trigger: str
    door: int | None
    log_id: int | None
    size: int
    width: int
    height: int
    file: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts.isoformat(), "trigger": self.trigger, "door": self.door,
                "log_id": self.log_id, "size": self.size, "width": self.width, "height": self.height,
                "file": self.file}


def table(captures: list[Capture]) -> str:
    """``doorphonectl log captures`` without ``--json``: one line per capture, newest first."""
    lines = ["id      time                       trigger      door  log entry  size"]
    for c in captures:
        lines.append(f"{c.id:<7} {c.ts.isoformat(timespec='seconds'):<26} {c.trigger:<12} "
                     f"{'-' if c.door is None else c.door:<5} {'-' if c.log_id is None else c.log_id:<10} "
                     f"{c.size / 1024:.0f} kB")
    return "\n".join(lines) if captures else "no captures"


@dataclass(frozen=True)
class Pending:
    """A capture checked and made room for, not yet written (:meth:`CaptureStore.reserve`)."""

    encoded: Encoded
    trigger: str
    door: int | None
    log_id: int | None
    ts: datetime
    name: str


class CaptureStore:
    """Captures on disk and in the log: ``open()`` creates the folder and sweeps, ``take()`` keeps one."""

    def __init__(self, state_dir: Path, db: Store, settings: CaptureSettings, clock: Clock | None = None) -> None:
        self.dir = Path(state_dir) / DIR_NAME
        self.store = db
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.removed = 0  # captures retention has deleted since start

    def open(self) -> dict[str, int]:
        """Create the folder (0700) and make files and rows agree; returns what the sweep removed."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        return self.sweep()

    # ---- taking
    def check(self, trigger: object, door: object = None, log_id: object = None) -> None:
        """Refuse a request naming an unknown or switched-off trigger, a door outside 1-16, a bad log id."""
        if not isinstance(trigger, str) or trigger not in TRIGGERS:
            raise CaptureError(f"unknown capture trigger {_show(trigger)} (use {', '.join(TRIGGERS)})")
        if trigger != "manual" and trigger not in self.settings.triggers:
            raise CaptureError(f"captures on {trigger} are switched off in config")
        if door is not None and (isinstance(door, bool) or not isinstance(door, int) or not 1 <= door <= MAX_DOOR):
            raise CaptureError(f"door must be a door number 1-{MAX_DOOR}, got {_show(door)}")
        if log_id is not None and (isinstance(log_id, bool) or not isinstance(log_id, int)
                                   or not 1 <= log_id <= MAX_LOG_ID):
            raise CaptureError(f"related log entry must be a positive integer id, got {_show(log_id)}")

    def encode(self, frame: Frame) -> Encoded:
        """The frame as JPEG at the configured quality (pure: safe in any thread). Loads OpenCV: for tests,
        benches and the camera process only; the daemon takes captures with :meth:`take_snapshot`."""
        from doorphoned.camera import jpeg

        return jpeg.encode(frame.image, self.settings.jpeg_quality)

    def take(self, frame: Frame, trigger: object, door: object = None, log_id: object = None) -> Capture:
        """Check, encode and keep one capture; raises :class:`CaptureError` (nothing written) when refused."""
        self.check(trigger, door, log_id)
        return self.keep(self.encode(frame), str(trigger), door, log_id)  # type: ignore[arg-type]

    def keep(self, encoded: Encoded, trigger: str, door: int | None = None, log_id: int | None = None) -> Capture:
        """Retention, the free-space floor, the file (temp, fsync, rename), then the row: all in this thread."""
        pending = self.reserve(encoded, trigger, door, log_id)
        self.write(pending)
        return self.record(pending)

    async def take_async(self, frame: Frame, trigger: object, door: object = None, log_id: object = None) -> Capture:
        """:meth:`take` for the asyncio loop: the JPEG encoding and the file's write and fsyncs (tens of ms
        on a loaded SD card) run in a worker thread, so doors do not wait for them; the database steps
        (checks, retention, the row) stay on the loop, whose thread owns the store."""
        self.check(trigger, door, log_id)
        encoded = await asyncio.to_thread(self.encode, frame)
        pending = self.reserve(encoded, str(trigger), door, log_id)  # type: ignore[arg-type]
        try:
            await asyncio.to_thread(self.write, pending)
        except BaseException:
            (self.dir / pending.name).unlink(missing_ok=True)
            raise
        return self.record(pending)

    def reserve(self, encoded: Encoded, trigger: str, door: int | None = None,
                log_id: int | None = None, room: int | None = None) -> Pending:
        """Step 1 (database thread): check the request, make room (retention) for the JPEG or ``room`` bytes,
        check the free-space floor."""
        self.check(trigger, door, log_id)
        size = len(encoded.jpeg) if room is None else room
        if size > self.settings.keep_bytes:
            raise CaptureError(f"a capture of {size} bytes is larger than the whole retention budget "
                               f"({self.settings.keep_bytes} bytes)")
        now = self.clock.now().astimezone(UTC)
        self.apply_retention(size, now)
        self._check_free(size)
        name = f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}.jpg"
        return Pending(encoded, trigger, door, log_id, now, name)

    def write(self, pending: Pending) -> None:
        """Step 2 (any thread): the file, durably, under its final name."""
        temp = self.temp_path(pending)
        files.write_new(temp, pending.encoded.jpeg)
        self.commit_file(pending)

    def temp_path(self, pending: Pending) -> Path:
        """Where the file of ``pending`` is written before it gets its name (hidden: swept after a crash)."""
        return self.dir / f".{pending.name}.tmp"

    def commit_file(self, pending: Pending) -> None:
        """The fsynced temp file under its final name, the folder fsynced: durable before its row."""
        os.rename(self.temp_path(pending), self.dir / pending.name)
        files.fsync_dir(self.dir)

    def record(self, pending: Pending, size: int | None = None, width: int | None = None,
               height: int | None = None) -> Capture:
        """Step 3 (database thread): the row, committed; without it the file would be swept at start. The
        figures are the encoded JPEG's, or those a snapshot's reply gave."""
        size = len(pending.encoded.jpeg) if size is None else size
        width = pending.encoded.width if width is None else width
        height = pending.encoded.height if height is None else height
        try:
            cursor = self.store.db.execute(
                "INSERT INTO captures (ts, trigger, door, log_id, size, width, height, file)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pending.ts.isoformat(), pending.trigger, pending.door, pending.log_id, size, width, height,
                 pending.name))
        except Exception:
            (self.dir / pending.name).unlink(missing_ok=True)
            raise
        return Capture(int(cursor.lastrowid or 0), pending.ts, pending.trigger, pending.door, pending.log_id, size,
                       width, height, pending.name)

    async def take_snapshot(self, request: SnapshotRequest, trigger: object, door: object = None,
                            log_id: object = None) -> Capture:
        """A capture of the camera's newest picture, without OpenCV here: the checks and retention run on the
        loop, the camera process encodes and writes the fsynced temp file this store names (``request`` is
        ``CameraFeature.request``), then the file gets its name and its row. Raises :class:`CaptureError`
        (nothing kept) when refused or when the camera could not take it."""
        self.check(trigger, door, log_id)
        estimate = Encoded(b"", 0, 0)
        pending = self.reserve(estimate, str(trigger), door, log_id, room=self._typical_size())  # type: ignore[arg-type]
        temp = self.temp_path(pending)
        try:
            reply = await request("snapshot", path=str(temp), quality=self.settings.jpeg_quality)
            size, width, height = (_reply_int(reply, key, high) for key, high in
                                   (("size", self.settings.keep_bytes), ("width", MAX_SIDE), ("height", MAX_SIDE)))
            if temp.stat(follow_symlinks=False).st_size != size or not temp.is_file():
                raise CaptureError("the camera's snapshot file does not match its reply")
            await asyncio.to_thread(self.commit_file, pending)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if isinstance(exc, Exception) and not isinstance(exc, CaptureError):
                raise CaptureError(f"capture failed: {str(exc)[:200]}") from exc
            raise
        taken = self.record(pending, size, width, height)
        self.apply_retention()
        return taken

    def _typical_size(self) -> int:
        """Room made before a snapshot whose size is not known yet: the newest capture's size (retention
        runs again, exactly, once the row is in)."""
        row = self.store.db.execute("SELECT size FROM captures ORDER BY id DESC LIMIT 1").fetchone()
        return min(int(row[0]) if row else 64 * 1024, self.settings.keep_bytes)

    def _check_free(self, size: int) -> None:
        free = self.free_bytes()
        if free - size < self.settings.min_free_bytes:
            raise CaptureError(f"capture refused: {free // 2**20} MB free on the state disk, a capture may not "
                               f"take it below {self.settings.min_free_bytes // 2**20} MB")

    def free_bytes(self) -> int:
        return files.free_bytes(self.dir)

    # ---- retention
    def apply_retention(self, incoming: int = 0, now: datetime | None = None) -> int:
        """Delete the oldest captures until one more of ``incoming`` bytes fits every limit; returns how many."""
        now = (now or self.clock.now()).astimezone(UTC)  # times are compared as ISO text: one zone
        cutoff = (now - timedelta(days=self.settings.keep_days)).isoformat()
        db = self.store.db
        count, total = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM captures").fetchone()
        doomed: list[tuple[int, str]] = []
        extra = 1 if incoming else 0
        for row_id, ts, size, name in self._oldest():
            if ts >= cutoff and count + extra <= self.settings.keep_count \
                    and total + incoming <= self.settings.keep_bytes:
                break
            doomed.append((row_id, name))
            count, total = count - 1, total - size
        self._delete(doomed)
        return len(doomed)

    def _oldest(self) -> Any:
        """Rows oldest first, fetched a batch at a time (retention usually needs one or two)."""
        last: tuple[str, int] = ("", 0)
        while True:
            rows = self.store.db.execute(
                "SELECT id, ts, size, file FROM captures WHERE (ts, id) > (?, ?) ORDER BY ts, id LIMIT ?",
                (*last, RETENTION_BATCH)).fetchall()
            yield from rows
            if len(rows) < RETENTION_BATCH:
                return
            last = (rows[-1][1], rows[-1][0])

    def _delete(self, doomed: list[tuple[int, str]]) -> None:
        """Rows first (one transaction), then files: a crash between leaves files without rows (swept)."""
        if not doomed:
            return
        db = self.store.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM captures WHERE id = ?", [(row_id,) for row_id, _ in doomed])
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
        for _, name in doomed:
            if _FILE_NAME.match(name):
                (self.dir / name).unlink(missing_ok=True)
        self.removed += len(doomed)

    def sweep(self) -> dict[str, int]:
        """Make files and rows agree after a crash: rows whose file is missing or short go, then files
        (and temp files) no row names."""
        rows = self.store.db.execute("SELECT id, size, file FROM captures").fetchall()
        on_disk = {entry.name: entry for entry in os.scandir(self.dir)}
        missing = [(row_id, name) for row_id, size, name in rows
                   if name not in on_disk or not on_disk[name].is_file(follow_symlinks=False)
                   or on_disk[name].stat(follow_symlinks=False).st_size != size]
        if missing:
            self.store.db.executemany("DELETE FROM captures WHERE id = ?", [(row_id,) for row_id, _ in missing])
        named = {name for _, _, name in rows} - {name for _, name in missing}
        strays = 0
        for name, entry in on_disk.items():
            if name not in named and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                strays += 1
        if missing or strays:
            log.warning("captures: swept %d log rows without a file and %d files without a row", len(missing),
                        strays)
        return {"rows": len(missing), "files": strays}

    # ---- reading
    def recent(self, limit: int = 100, trigger: str | None = None) -> list[Capture]:
        """Newest first (``doorphonectl log captures``)."""
        query = "SELECT id, ts, trigger, door, log_id, size, width, height, file FROM captures"
        args: list[object] = []
        if trigger is not None:
            query += " WHERE trigger = ?"
            args.append(trigger)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(max(0, min(int(limit), 100_000)))
        return [_capture(row) for row in self.store.db.execute(query, args)]

    def get(self, capture_id: object) -> Capture:
        if isinstance(capture_id, bool) or not isinstance(capture_id, int) or not 1 <= capture_id <= MAX_LOG_ID:
            raise CaptureNotFoundError(f"no capture {_show(capture_id)}")
        row = self.store.db.execute("SELECT id, ts, trigger, door, log_id, size, width, height, file FROM captures"
                                    " WHERE id = ?", (capture_id,)).fetchone()
        if row is None:
            raise CaptureNotFoundError(f"no capture {capture_id}")
        return _capture(row)

    def read_file(self, capture: Capture) -> bytes:
        """The whole JPEG of a capture :meth:`get` returned (no database: any thread)."""
        if not _FILE_NAME.match(capture.file):
            raise CaptureNotFoundError(f"capture {capture.id} names no capture file")
        try:
            return (self.dir / capture.file).read_bytes()
        except FileNotFoundError as exc:
            raise CaptureNotFoundError(f"capture {capture.id}'s file is gone") from exc

    def read(self, capture_id: object, offset: int = 0, length: int | None = None) -> bytes:
        """The JPEG's bytes (a chunk of them for ``capture.get``'s acknowledged upload)."""
        capture = self.get(capture_id)
        if not _FILE_NAME.match(capture.file):
            raise CaptureNotFoundError(f"capture {capture.id} names no capture file")
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        try:
            with open(self.dir / capture.file, "rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError as exc:
            raise CaptureNotFoundError(f"capture {capture.id}'s file is gone") from exc

    def stats(self) -> dict[str, int]:
        count, total = self.store.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM captures").fetchone()
        return {"count": int(count), "bytes": int(total), "removed": self.removed}


def _reply_int(reply: Mapping[str, Any], key: str, high: int) -> int:
    value = reply.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise CaptureError(f"the camera's snapshot reply has no valid {key}")
    return value


def _capture(row: tuple[Any, ...]) -> Capture:
    return Capture(row[0], datetime.fromisoformat(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8])



def _check_int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CaptureError(f"{key} must be an integer within {low}..{high}, got {_show(value)}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
