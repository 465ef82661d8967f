"""Enrolment photos kept for audit (``[face] keep_photos``): sealed files under ``<state>/face-photos/``.

Off by default: then a photo lives in the daemon's memory and the enrolment process's pipe only, and
nothing of it touches the disk. On, every photo that produced a stored template is kept, because an
auditor may ask which picture a template came from; a photo refused at enrolment is never written.

Why sealed: an auditor also expects a stolen SD card to show no faces. Each file is the photo sealed
(AES-GCM) with the device key, bound to its user and its id (a file copied to another name or user does
not open), named by a random id that says nothing of the person; files are 0600 in a 0700 folder.

Why the order of writes (as for captures, camera/captures.py): the file is written under a hidden temp
name, fsynced, renamed and the folder fsynced before its row (``face_templates.photo``) commits; a crash
in between leaves a file without a row, which :meth:`FacePhotos.open` sweeps at start. Removal is the
other way round: the row goes in the caller's transaction (face remove, a user removed by any path through
``ON DELETE CASCADE``, a sync replacing faces, retention), a trigger notes the file in
``face_photo_doomed`` in that same transaction, and :meth:`FacePhotos.drain` deletes the files right after
the commit, then the notes. A kill -9 between commit and unlink leaves the note, drained at the next start.

Retention (oldest first, their templates stay): at most ``photos_keep_count`` photos and
``photos_keep_bytes`` bytes, none older than ``photos_keep_days``; applied before every write and at start.
An enrolment whose photos would leave less than ``photos_min_free_bytes`` free is refused: the disk never
fills with faces.

Threads: :meth:`FacePhotos.write` (sealing and fsyncs) touches no database and runs in a worker thread;
everything else runs where the store is used, the loop's thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from doorphoned.core import files
from doorphoned.core.clock import Clock
from doorphoned.core.devicekey import DeviceKeyError
from doorphoned.core.store import Store, joined_transaction
from doorphoned.face.config import FaceConfig
from doorphoned.face.store import Sealer

log = logging.getLogger(__name__)

DIR_NAME = "face-photos"
SUFFIX = ".sealed"
ID_CHARS = 32  # 128 random bits, hex
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
SEAL_OVERHEAD = 28  # AES-GCM: 12-byte nonce + 16-byte tag (core/devicekey.py)
SOURCE_NAMES = {"local": "cli", "cloud": "cloud"}


class AuditPhotoError(ValueError):
    """A photo that cannot be kept, or is not there to read; the message says why (safe to show)."""


@dataclass(frozen=True)
class PhotoLimits:
    """``[face]``'s retention keys, as :class:`FacePhotos` applies them."""

    keep: bool
    count: int
    bytes: int
    days: float
    min_free: int

    @classmethod
    def of(cls, c: FaceConfig) -> PhotoLimits:
        return cls(c.keep_photos, c.photos_keep_count, c.photos_keep_bytes, c.photos_keep_days,
                   c.photos_min_free_bytes)


@dataclass(frozen=True)
class KeptPhoto:
    """What ``face show`` tells of a kept photo (never its bytes)."""

    id: str
    template: int
    added: str
    size: int
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "template": self.template, "added": self.added, "size": self.size,
                "source": SOURCE_NAMES.get(self.source, self.source)}


@dataclass(frozen=True)
class Written:
    """Sealed files on disk whose rows are not in yet (:meth:`FacePhotos.write`)."""

    ids: tuple[str, ...]
    sizes: tuple[int, ...]


def _context(user_id: str, photo_id: str) -> str:
    return f"face-photo:{user_id}:{photo_id}"


class FacePhotos:
    """Kept enrolment photos: ``open()`` at start, ``make_room()`` + ``write()`` before the rows, ``drain()``
    after any commit that may have removed templates, ``of_user()``/``read()`` for audit."""

    def __init__(self, state_dir: Path, store: Store, sealer: Sealer, clock: Clock,
                 limits: Callable[[], PhotoLimits]) -> None:
        self.dir = Path(state_dir) / DIR_NAME
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._limits = limits
        self.removed = 0  # photos retention has dropped since start

    @property
    def db(self) -> Any:
        return self._store.db

    # ------------------------------------------------------------ start
    def open(self) -> dict[str, int]:
        """Drain the notes a crash left, make files and rows agree, apply retention. The folder is made only
        when photos are kept (or it already exists): with ``keep_photos`` off nothing appears on disk."""
        if not self.dir.exists() and not self._limits().keep:
            return {"drained": 0, **self._forget_missing(set()), "files": 0, "retired": 0}
        self._make_dir()
        drained = self.drain()
        swept = self.sweep()
        retired = self.apply_retention()
        return {"drained": drained, **swept, "retired": retired}

    def _make_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def sweep(self) -> dict[str, int]:
        """Files (and temp files) no row names go; rows whose file is missing lose their photo."""
        names = {r[0] for r in self.db.execute("SELECT photo FROM face_templates WHERE photo IS NOT NULL")}
        on_disk: set[str] = set()
        strays = 0
        for entry in os.scandir(self.dir):
            photo_id = entry.name.removesuffix(SUFFIX)
            if entry.name.endswith(SUFFIX) and photo_id in names and entry.is_file(follow_symlinks=False):
                on_disk.add(photo_id)
                continue
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(entry.path)
                strays += 1
        rows = self._forget_missing(on_disk)["rows"]
        if strays or rows:
            log.warning("face photos: swept %d file(s) without a row and %d row(s) without a file", strays, rows)
        return {"rows": rows, "files": strays}

    def _forget_missing(self, on_disk: set[str]) -> dict[str, int]:
        missing = [r[0] for r in self.db.execute("SELECT photo FROM face_templates WHERE photo IS NOT NULL")
                   if r[0] not in on_disk]
        if missing:
            self._in_transaction(lambda: self.db.executemany(
                "UPDATE face_templates SET photo = NULL, photo_size = NULL WHERE photo = ?", [(m,) for m in missing]))
            self.drain()
        return {"rows": len(missing)}

    # ------------------------------------------------------------ keeping
    def make_room(self, photos: Sequence[bytes]) -> None:
        """Before writing ``photos``: retention makes room for them, then the free-space floor is checked;
        raises :class:`AuditPhotoError` (nothing written) when they cannot be kept."""
        limits = self._limits()
        sizes = [len(p) + SEAL_OVERHEAD for p in photos]
        if len(sizes) > limits.count or sum(sizes) > limits.bytes:
            raise AuditPhotoError(f"{len(sizes)} photo(s) of {sum(sizes)} bytes do not fit the photo retention "
                                  f"({limits.count} photos, {limits.bytes} bytes): not kept, nothing enrolled")
        self._make_dir()
        self.apply_retention(len(sizes), sum(sizes))
        free = self.free_bytes()
        if free - sum(sizes) < limits.min_free:
            raise AuditPhotoError(f"the photos cannot be kept for audit: {free // 2**20} MB free on the state disk, "
                                  f"a kept photo may not take it below {limits.min_free // 2**20} MB; "
                                  "nothing enrolled")

    def write(self, user_id: str, photos: Sequence[bytes]) -> Written:
        """Seal and write each photo durably under a new id (any thread; no database). All or none."""
        ids: list[str] = []
        sizes: list[int] = []
        try:
            for data in photos:
                photo_id = secrets.token_hex(ID_CHARS // 2)
                ids.append(photo_id)
                sizes.append(self._write_one(photo_id, self._sealer.seal_bytes(data, _context(user_id, photo_id))))
            files.fsync_dir(self.dir)
        except BaseException:
            self.discard(Written(tuple(ids), ()))
            raise
        return Written(tuple(ids), tuple(sizes))

    def _write_one(self, photo_id: str, sealed: bytes) -> int:
        temp = self.dir / f".{photo_id}.tmp"
        files.write_new(temp, sealed)
        os.rename(temp, self.dir / f"{photo_id}{SUFFIX}")
        return len(sealed)

    def discard(self, written: Written) -> None:
        """Files whose rows never committed (the store refused the templates)."""
        for photo_id in written.ids:
            (self.dir / f".{photo_id}.tmp").unlink(missing_ok=True)
            (self.dir / f"{photo_id}{SUFFIX}").unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return files.free_bytes(self.dir)

    # ------------------------------------------------------------ removal
    def drain(self) -> int:
        """Delete the files whose rows went (the notes the triggers left), then the notes. Only outside a
        transaction: inside one the rows are not gone yet (the outer commit's caller drains)."""
        if self.db.in_transaction:
            return 0
        names = [r[0] for r in self.db.execute("SELECT photo FROM face_photo_doomed")]
        if not names:
            return 0
        for name in names:
            if ID_PATTERN.match(name):
                (self.dir / f"{name}{SUFFIX}").unlink(missing_ok=True)
        self._in_transaction(lambda: self.db.executemany("DELETE FROM face_photo_doomed WHERE photo = ?",
                                                         [(n,) for n in names]))
        return len(names)

    def apply_retention(self, incoming: int = 0, incoming_bytes: int = 0, now: datetime | None = None) -> int:
        """Drop the oldest photos (their templates stay) until ``incoming`` more of ``incoming_bytes`` fit every
        limit and none is older than ``photos_keep_days``; returns how many went."""
        limits = self._limits()
        cutoff = (now or self._clock.now()).astimezone(UTC) - timedelta(days=limits.days)
        rows = self.db.execute("SELECT id, photo_size, added FROM face_templates WHERE photo IS NOT NULL"
                               " ORDER BY added, id").fetchall()
        count, total = len(rows), sum(int(r[1] or 0) for r in rows)
        doomed: list[int] = []
        for row_id, size, added in rows:
            if _instant(added) >= cutoff and count + incoming <= limits.count \
                    and total + incoming_bytes <= limits.bytes:
                break
            doomed.append(row_id)
            count, total = count - 1, total - int(size or 0)
        if doomed:
            self._in_transaction(lambda: self.db.executemany(
                "UPDATE face_templates SET photo = NULL, photo_size = NULL WHERE id = ?", [(i,) for i in doomed]))
            self.drain()
            self.removed += len(doomed)
            log.info("face photos: retention removed %d kept photo(s)", len(doomed))
        return len(doomed)

    def _in_transaction(self, change: Callable[[], object]) -> None:
        with joined_transaction(self.db):
            change()

    # ------------------------------------------------------------ audit
    def of_user(self, user_id: str) -> list[KeptPhoto]:
        rows = self.db.execute("SELECT photo, id, added, photo_size, source FROM face_templates"
                               " WHERE user_id = ? AND photo IS NOT NULL ORDER BY id", (user_id,))
        return [KeptPhoto(r[0], int(r[1]), r[2], int(r[3] or 0), r[4]) for r in rows]

    def read(self, user_id: str, photo_id: str) -> bytes:
        """The original photo, unsealed; :class:`AuditPhotoError` when the user has no such kept photo."""
        return self.unseal_file(user_id, photo_id, self.locate(user_id, photo_id))

    def locate(self, user_id: str, photo_id: str) -> Path:
        """The file of the user's kept photo ``photo_id`` (the database step: the loop's thread)."""
        if not ID_PATTERN.match(photo_id) or self.db.execute(
                "SELECT 1 FROM face_templates WHERE user_id = ? AND photo = ?", (user_id, photo_id)).fetchone() is None:
            raise AuditPhotoError("no such kept photo of this user (see face show)")
        return self.dir / f"{photo_id}{SUFFIX}"

    def unseal_file(self, user_id: str, photo_id: str, path: Path) -> bytes:
        """Read and unseal a file :meth:`locate` named (no database: any thread; a 10 MB photo takes a while)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise AuditPhotoError(f"the kept photo's file is gone ({exc.strerror})") from exc
        with os.fdopen(fd, "rb") as handle:
            sealed = handle.read()
        try:
            return self._sealer.unseal_bytes(sealed, _context(user_id, photo_id))
        except (DeviceKeyError, ValueError) as exc:
            raise AuditPhotoError("the kept photo does not open with this unit's device key") from exc

    def stats(self) -> dict[str, int]:
        count, total = self.db.execute("SELECT count(photo), coalesce(sum(photo_size), 0) FROM face_templates"
                                       " WHERE photo IS NOT NULL").fetchone()
        return {"kept_photos": int(count), "kept_photo_bytes": int(total), "photos_retired": self.removed}


def _instant(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)  # unreadable: the oldest there is
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
