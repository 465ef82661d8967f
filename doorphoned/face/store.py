"""Face templates in the SQLite store, sealed with the device key.

A template is the 128 floats face_recognition computes for one face (several per user: photos in
different light). Only templates are kept, never the photo (unless ``[face] keep_photos`` keeps it for
audit: :mod:`doorphoned.face.photos`; a row then names its sealed file), and each is sealed (AES-GCM)
with the device key bound to its user id, so a copy of the database carries nothing usable and a sealed
value copied to another user's row does not open. ``face_templates.user_id`` cascades from ``users``:
removing a user by any path drops their templates in the same transaction.

The face folder may not import ``access/`` (scripts/check_imports.py): the device key reaches this
module as a :class:`Sealer` from the composition root.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from doorphoned.core.faces import DIMENSIONS, MAX_COMPONENT, TemplateError
from doorphoned.core.faces import check_template as _check
from doorphoned.core.store import Store, joined_transaction

__all__ = ["DIMENSIONS", "MAX_COMPONENT", "FaceStore", "FaceStoreError", "Gallery", "check_template", "load_gallery"]

MAX_TEMPLATES_PER_USER = 10
SOURCES = ("local", "cloud")

#: 128 float32 numbers. The daemon handles templates as plain tuples: it never imports numpy (its memory stays what
#: it was); the worker and the enrolment process turn the gallery into a numpy matrix (:func:`load_gallery`).
Template = Sequence[float]
_PACK = struct.Struct(f"<{DIMENSIONS}f")


class FaceStoreError(ValueError):
    """A change that breaks a rule (no such user, too many templates, not a template); for the installer."""


class Sealer(Protocol):
    """The device key as this module needs it (``core/devicekey.DeviceKey`` satisfies it)."""

    def seal_bytes(self, plaintext: bytes, context: str) -> bytes: ...
    def unseal_bytes(self, sealed: bytes, context: str) -> bytes: ...


@dataclass(frozen=True)
class TemplateInfo:
    """What ``face show`` tells of one template: never the numbers."""

    id: int
    user_id: str
    source: str
    added: str
    photo: str | None


@dataclass(frozen=True)
class Gallery:
    """Every template, for 1:N matching: ``owners[i]`` is the user of row ``i`` of ``matrix`` (n x 128)."""

    owners: tuple[str, ...]
    matrix: Any  # numpy.ndarray, float32, n x 128
    version: int


def check_template(values: object) -> tuple[float, ...]:
    """:func:`doorphoned.core.faces.check_template`, refusing with :class:`FaceStoreError`."""
    try:
        return _check(values)
    except TemplateError as exc:
        raise FaceStoreError(str(exc)) from None


def _context(user_id: str) -> str:
    return f"face:{user_id}"


class FaceStore:
    def __init__(self, store: Store, sealer: Sealer) -> None:
        self._store = store
        self._sealer = sealer

    @property
    def db(self) -> sqlite3.Connection:
        return self._store.db

    def _transaction(self) -> AbstractContextManager[None]:
        return joined_transaction(self.db)  # joins a sync's transaction

    # ------------------------------------------------------------ changes
    def add(self, user_id: str, templates: Sequence[Template], source: str, now: datetime,
            photos: Sequence[tuple[str, int]] = ()) -> list[int]:
        """Add ``templates`` to the user's, all or none; returns their ids. ``photos[i]`` (id, sealed size) is
        the kept photo template ``i`` came from (``keep_photos``; already on disk)."""
        if source not in SOURCES:
            raise ValueError(source)
        with self._transaction():
            if self.db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise FaceStoreError(f"no user {user_id!r}")
            have = self.count(user_id)
            if have + len(templates) > MAX_TEMPLATES_PER_USER:
                raise FaceStoreError(f"a user has at most {MAX_TEMPLATES_PER_USER} face templates"
                                     f" ({user_id!r} has {have})")
            if photos and len(photos) != len(templates):
                raise ValueError("one kept photo per template")
            kept: list[tuple[str | None, int | None]] = list(photos) or [(None, None)] * len(templates)
            checked = [check_template(t) for t in templates]
            return [self._insert(user_id, t, source, now, photo) for t, photo in zip(checked, kept, strict=True)]

    def _insert(self, user_id: str, template: Template, source: str, now: datetime,
                photo: tuple[str | None, int | None]) -> int:
        sealed = self._sealer.seal_bytes(_PACK.pack(*template), _context(user_id))
        cursor = self.db.execute("INSERT INTO face_templates (user_id, template, source, added, photo, photo_size)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", (user_id, sealed, source, now.isoformat(), *photo))
        return int(cursor.lastrowid or 0)

    def replace(self, user_id: str, templates: Sequence[Template], source: str, now: datetime,
                photos: Sequence[tuple[str, int]] = ()) -> None:
        """A sync's word on a user's faces: exactly these (an empty list removes them all). The kept photos of
        the templates that went are noted for deletion (face_photo_doomed) in the same transaction."""
        with self._transaction():
            self.db.execute("DELETE FROM face_templates WHERE user_id = ?", (user_id,))
            if templates:
                self.add(user_id, templates, source, now, photos)

    def remove(self, user_id: str, template_id: int | None = None) -> list[str | None]:
        """Remove one template or all of a user's; returns their kept photos' ids (None: none kept), whose
        files the trigger noted for :meth:`doorphoned.face.photos.FacePhotos.drain`."""
        where, args = ("user_id = ? AND id = ?", (user_id, template_id)) if template_id is not None \
            else ("user_id = ?", (user_id,))
        with self._transaction():
            rows = self.db.execute(f"DELETE FROM face_templates WHERE {where} RETURNING photo",  # noqa: S608
                                   args).fetchall()
        if not rows:
            raise FaceStoreError(f"no face template {template_id} of {user_id!r}" if template_id is not None
                                 else f"{user_id!r} has no face templates")
        return [r[0] for r in rows]

    # ------------------------------------------------------------ reads
    def count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return int(self.db.execute("SELECT count(*) FROM face_templates").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM face_templates WHERE user_id = ?", (user_id,)).fetchone()[0])

    def users(self, limit: int = 1000, offset: int = 0) -> list[tuple[str, int]]:
        """(user id, templates) of every enrolled user, in id order."""
        rows = self.db.execute("SELECT user_id, count(*) FROM face_templates GROUP BY user_id ORDER BY user_id"
                               " LIMIT ? OFFSET ?", (limit, offset))
        return [(r[0], int(r[1])) for r in rows]

    def of_user(self, user_id: str) -> list[TemplateInfo]:
        rows = self.db.execute("SELECT id, user_id, source, added, photo FROM face_templates WHERE user_id = ?"
                               " ORDER BY id", (user_id,))
        return [TemplateInfo(*r) for r in rows]

    def templates_of(self, user_id: str) -> list[tuple[float, ...]]:
        rows = self.db.execute("SELECT template FROM face_templates WHERE user_id = ? ORDER BY id", (user_id,))
        return [_PACK.unpack(self._sealer.unseal_bytes(r[0], _context(user_id))) for r in rows]

    def version(self, db: sqlite3.Connection | None = None) -> int:
        return int((db or self.db).execute("SELECT version FROM face_version WHERE id = 1").fetchone()[0])

    def gallery(self) -> Gallery:
        """Every template as a numpy matrix (tests, the bench; the daemon itself never calls this)."""
        return load_gallery(self.db, self._sealer)



def load_gallery(db: sqlite3.Connection, sealer: Sealer) -> Gallery:
    """Every template unsealed, ordered by user, for the matcher (``db``: the worker's read-only connection)."""
    import numpy as np

    def open_template(user_id: str, sealed: bytes) -> Any:
        return np.frombuffer(sealer.unseal_bytes(sealed, _context(user_id)), dtype="<f4")

    version = int(db.execute("SELECT version FROM face_version WHERE id = 1").fetchone()[0])
    rows = db.execute("SELECT user_id, template FROM face_templates ORDER BY user_id, id").fetchall()
    owners = tuple(r[0] for r in rows)
    if not rows:
        return Gallery(owners, np.zeros((0, DIMENSIONS), dtype=np.float32), version)
    return Gallery(owners, np.vstack([open_template(u, t) for u, t in rows]).astype(np.float32), version)
