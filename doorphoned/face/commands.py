"""Face commands: enrol, list, show, remove, check a photo; the cloud's ``face.upsert`` and ``face.remove``.

A photo is larger than one control-socket request (64 KB) or one MQTT payload (``cloud.max_payload``), so
it arrives in parts: ``face.upload`` (socket) or ``face.upsert`` with ``part``/``parts`` (cloud) stage
base64 pieces under an upload id, in memory only, bounded in number, size and age; the last part (or
``face.enrol`` naming the uploads) hands the whole photo to the enrolment process
(``python -m doorphoned.face.enrol``: decoding and dlib never run in the daemon). A template is stored only
when every photo of the request passed; a refused request stores nothing and says why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from doorphoned.core.clock import Clock
from doorphoned.core.commands import Caller, Command, CommandError, arg_int, arg_opt_text, arg_text, shown
from doorphoned.core.presentations import Credential, FaceMatch
from doorphoned.core.schedule import ScheduleError, parse_local_datetime
from doorphoned.face.config import FaceConfig
from doorphoned.face.photos import AuditPhotoError, FacePhotos, Written
from doorphoned.face.store import FaceStore, FaceStoreError, Template, check_template

log = logging.getLogger(__name__)

MAX_UPLOADS = 8
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PARTS = 400
PHOTO_CHUNK = 512 * 1024  # raw bytes of a kept photo per face.photo answer (a 10 MB photo: 20 answers)
UPLOAD_SECONDS = 300.0
TOOL_TIMEOUT = 120.0  # dlib's import and models on a loaded 2-core unit, then up to 10 photos
UPLOAD_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

Explain = Callable[[Credential, int, datetime], dict[str, Any]]


@dataclass
class Upload:
    parts: int
    started: float
    pieces: dict[int, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.pieces.values())

    @property
    def complete(self) -> bool:
        return len(self.pieces) == self.parts


class Uploads:
    """Photos arriving in parts, kept in memory (never on disk) until used or ``UPLOAD_SECONDS`` old."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._open: dict[str, Upload] = {}

    def add(self, upload_id: str, part: int, parts: int, data: str) -> Upload:
        self._expire()
        if not 1 <= len(upload_id) <= 64 or not set(upload_id) <= UPLOAD_ID_CHARS:
            raise CommandError("upload must be 1-64 of A-Z a-z 0-9 _ -")
        if not 1 <= parts <= MAX_PARTS or not 1 <= part <= parts:
            raise CommandError(f"part must be 1..parts, parts 1..{MAX_PARTS}")
        try:
            piece = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CommandError("data is not valid base64") from exc
        upload = self._open.get(upload_id)
        if upload is None:
            if len(self._open) >= MAX_UPLOADS:
                raise CommandError(f"at most {MAX_UPLOADS} uploads at once; finish or wait for one")
            upload = self._open[upload_id] = Upload(parts, self._now())
        if upload.parts != parts:
            raise CommandError(f"upload {shown(upload_id)} has {upload.parts} parts, not {parts}")
        if upload.size + len(piece) - len(upload.pieces.get(part, b"")) > MAX_PHOTO_BYTES:
            del self._open[upload_id]
            raise CommandError(f"a photo is at most {MAX_PHOTO_BYTES} bytes; upload {shown(upload_id)} dropped")
        upload.pieces[part] = piece
        return upload

    def take(self, upload_id: str) -> bytes:
        """The whole photo, removed from memory; refused unless every part arrived."""
        self._expire()
        upload = self._open.get(upload_id)
        if upload is None:
            raise CommandError(f"no upload {shown(upload_id)} (expired after {UPLOAD_SECONDS:.0f} s?)")
        if not upload.complete:
            raise CommandError(f"upload {shown(upload_id)} has {len(upload.pieces)} of {upload.parts} parts")
        del self._open[upload_id]
        return b"".join(upload.pieces[i] for i in range(1, upload.parts + 1))

    def _expire(self) -> None:
        now = self._now()
        for upload_id in [k for k, u in self._open.items() if now - u.started > UPLOAD_SECONDS]:
            del self._open[upload_id]

    def __len__(self) -> int:
        return len(self._open)


class FaceCommands:
    """Given the face store, the clock, the section, the paths the enrolment process reads (store, device key),
    a way to explain a credential at a door (``gate.check``), a hook run after every change of templates
    (the worker reloads, removed templates' kept photos go) and the kept photos (``keep_photos``)."""

    def __init__(self, faces: FaceStore, clock: Clock, tz: Callable[[], ZoneInfo], config: Callable[[], FaceConfig],
                 db_path: Path, key_path: Path, explain: Explain, changed: Callable[[], None] = lambda: None,
                 photos: FacePhotos | None = None) -> None:
        self.faces = faces
        self.photos = photos
        self._clock = clock
        self._tz = tz
        self._config = config
        self._db = db_path
        self._key = key_path
        self._explain = explain
        self._changed = changed
        self.uploads = Uploads()
        self._tool = asyncio.Lock()  # one dlib process at a time: each is ~200 MB

    def commands(self) -> list[Command]:
        return [
            Command("face.upload", None, self.upload, frozenset({"upload", "part", "parts", "data"}),
                    "stage a part of a photo (base64)"),
            Command("face.enrol", None, self.enrol, frozenset({"user", "uploads"}),
                    "enrol a user's face from uploaded photos"),
            Command("face.list", None, self.list_users, frozenset({"limit", "offset"}), "users with face templates"),
            Command("face.show", None, self.show, frozenset({"user"}),
                    "a user's face templates and kept photos (never the data)"),
            Command("face.photo", None, self.photo, frozenset({"user", "photo", "offset"}),
                    "a kept enrolment photo's bytes, for audit (base64, in chunks)"),
            Command("face.remove", "face.remove", self.remove, frozenset({"user", "template"}),
                    "remove one or every face template of a user"),
            Command("face.check", None, self.check, frozenset({"upload", "door", "at"}),
                    "what a photo of a face would do at a door, and why (nothing moves)"),
            Command(None, "face.upsert", self.upsert,
                    frozenset({"user", "photo", "template", "upload", "part", "parts", "replace"}),
                    "add a face to a user: a photo (JPEG/PNG, base64, in parts) or a 128-number template"),
        ]

    # ------------------------------------------------------------ uploads and enrolment
    async def upload(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        up = self.uploads.add(arg_text(args, "upload", limit=64), arg_int(args, "part", 1, MAX_PARTS),
                              arg_int(args, "parts", 1, MAX_PARTS), arg_text(args, "data", limit=1 << 20))
        return {"upload": args["upload"], "received": len(up.pieces), "parts": up.parts}

    async def enrol(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user_id = self._user(args)
        ids = args.get("uploads")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 10 or not all(isinstance(i, str) for i in ids):
            raise CommandError("uploads must be a list of 1-10 upload ids")
        photos = [self.uploads.take(i) for i in ids]
        return await self._enrol(user_id, photos, "local")

    async def _enrol(self, user_id: str, photos: list[bytes], source: str) -> dict[str, Any]:
        if not self._config().enabled:
            raise CommandError("face recognition is off ([face] enabled = false)")
        answer = await self._run_tool("enrol", user_id, photos)
        if answer.get("ok") is not True:
            raise CommandError(_refusal(answer))
        templates = [check_template(t) for t in answer.get("templates", [])]
        ids = await self._keep(user_id, photos, templates, lambda kept: self.faces.add(
            user_id, templates, source, self._clock.now(), kept))
        log.info("face: %d template(s) enrolled for %s", len(ids), shown(user_id))
        return {"user": user_id, "templates": ids, "quality": answer.get("quality", [])}

    async def _keep(self, user_id: str, photos: list[bytes], templates: list[tuple[float, ...]],
                    store: Callable[[list[tuple[str, int]]], list[int]]) -> list[int]:
        """Store the templates; with ``keep_photos``, each with its photo, sealed on disk before the rows (a
        refused store removes the files again). The enrolment process answers one template per photo."""
        if self.photos is None or not self._config().keep_photos:
            return list(self._store(lambda: store([])))
        if len(templates) != len(photos):
            raise CommandError("the face process answered a template count that does not match the photos")
        try:
            self.photos.make_room(photos)
        except AuditPhotoError as exc:
            raise CommandError(str(exc)) from exc
        try:
            written = await asyncio.to_thread(self.photos.write, user_id, photos)
        except OSError as exc:
            raise CommandError(f"the photos could not be kept for audit ({exc.strerror or exc}); nothing "
                               "enrolled") from exc
        try:
            ids = list(self._store(lambda: store(_kept(written))))
        except BaseException:
            self.photos.discard(written)
            raise
        self.photos.apply_retention()  # exact again if another enrolment kept photos meanwhile
        log.info("face: %d enrolment photo(s) kept for audit", len(written.ids))
        return ids

    async def _run_tool(self, op: str, user_id: str, photos: list[bytes]) -> dict[str, Any]:
        c = self._config()
        request = {"op": op, "user": user_id, "photos": [base64.b64encode(p).decode() for p in photos],
                   "db": str(self._db), "key": str(self._key), "threshold": c.threshold, "margin": c.margin,
                   "limits": {"min_eye_distance": c.min_eye_distance, "min_sharpness": c.min_sharpness,
                              "min_brightness": c.min_brightness}}
        async with self._tool:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "doorphoned.face.enrol", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
            try:
                out, _ = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()), TOOL_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise CommandError(f"the face process did not answer in {TOOL_TIMEOUT:.0f} s") from None
        try:
            answer = json.loads(out)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise CommandError(f"the face process failed (exit status {proc.returncode})")
        return answer

    def _store(self, change: Callable[[], Any]) -> Any:
        try:
            result = change()
        except FaceStoreError as exc:
            raise CommandError(str(exc)) from exc
        self._changed()
        return result

    # ------------------------------------------------------------ reads and removal
    async def list_users(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        limit, offset = arg_int(args, "limit", 1, 10000, 1000), arg_int(args, "offset", 0, 10**9, 0)
        users = self.faces.users(limit, offset)
        return {"users": [{"user": u, "templates": n} for u, n in users], "total": self.faces.count()}

    async def show(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """A user's templates and kept photos; an unknown user is an error, not an empty answer (an
        installer who mistypes an id must not read "0 templates" as "this user has no face")."""
        user_id = self._user(args)
        kept = self.photos.of_user(user_id) if self.photos is not None else []
        return {"user": user_id, "templates": [
            {"id": t.id, "source": t.source, "added": t.added, "photo_kept": t.photo is not None}
            for t in self.faces.of_user(user_id)], "photos": [p.as_dict() for p in kept]}

    async def photo(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """A kept photo, unsealed, ``PHOTO_CHUNK`` bytes from ``offset`` (the CLI asks until it has ``size``).
        Only on the control socket (root and the ``doorphoned`` group): the cloud never gets photo bytes."""
        user_id, photo_id = arg_text(args, "user", limit=64), arg_text(args, "photo", limit=64)
        offset = arg_int(args, "offset", 0, 2**40, 0)
        if self.photos is None:
            raise CommandError("no kept photos")
        try:
            path = self.photos.locate(user_id, photo_id)
            data = await asyncio.to_thread(self.photos.unseal_file, user_id, photo_id, path)  # off the loop
        except AuditPhotoError as exc:
            raise CommandError(f"{exc}: user {shown(user_id)}, photo {shown(photo_id)}") from exc
        chunk = data[offset:offset + PHOTO_CHUNK]
        return {"user": user_id, "photo": photo_id, "size": len(data), "offset": offset,
                "data": base64.b64encode(chunk).decode()}

    async def remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user_id = arg_text(args, "user")
        template = arg_int(args, "template", 1, 2**63 - 1) if args.get("template") is not None else None
        photos = self._store(lambda: self.faces.remove(user_id, template))  # _changed: their kept photos go
        return {"user": user_id, "removed": len(photos), "photos_removed": sum(1 for p in photos if p)}

    # ------------------------------------------------------------ check
    async def check(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16, None)
        at_text = arg_opt_text(args, "at")
        photo = self.uploads.take(arg_text(args, "upload", limit=64))
        answer = await self._run_tool("check", "", [photo])
        if answer.get("ok") is not True:
            raise CommandError(_refusal(answer))
        match, c = answer.get("match") or {}, self._config()
        best = match.get("best_distance")
        distance = float(best) if isinstance(best, int | float) else float("nan")
        user = answer.get("user") if isinstance(answer.get("user"), str) else None
        at = self._at(at_text)
        decision = self._explain(FaceMatch(user, distance, "check"), door, at)
        return {"face": {**match, "threshold": c.threshold, "margin": c.margin, "faces_in_photo": answer.get("faces"),
                         "verdict": answer.get("verdict"), "liveness": "n/a (a single photo)"}, **decision}

    def _at(self, text: str | None) -> datetime:
        if not text:
            return self._clock.now()
        try:
            return parse_local_datetime(text, self._tz())
        except ScheduleError as exc:
            raise CommandError(str(exc)) from exc

    # ------------------------------------------------------------ the cloud
    async def upsert(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """A template (128 numbers) is stored at once; a photo is enrolled like ``face enrol``, after its last
        part when it came in parts. ``replace: true`` drops the user's other templates in the same step."""
        user_id = self._user(args)
        replace = args.get("replace", False)
        if not isinstance(replace, bool):
            raise CommandError("replace must be true or false")
        given = [k for k in ("photo", "template") if args.get(k) is not None]
        if len(given) != 1:
            raise CommandError("give exactly one of photo (base64) or template (128 numbers)")
        if given[0] == "template":
            try:
                template = check_template(args["template"])
            except FaceStoreError as exc:
                raise CommandError(str(exc)) from exc
            now = self._clock.now()
            ids = self._store(lambda: self._put(user_id, [template], now, replace))
            return {"user": user_id, "templates": ids}
        photo = self._photo(args, user_id)
        if photo is None:
            return {"user": user_id, "staged": True}
        answer = await self._run_tool("enrol", user_id, [photo])
        if answer.get("ok") is not True:
            raise CommandError(_refusal(answer))
        templates = [check_template(t) for t in answer.get("templates", [])]
        now = self._clock.now()
        ids = await self._keep(user_id, [photo], templates,
                               lambda kept: self._put(user_id, templates, now, replace, kept))
        return {"user": user_id, "templates": ids}

    def _photo(self, args: dict[str, Any], user_id: str) -> bytes | None:
        """The whole photo, or None while parts are still missing."""
        if not self._config().enabled:
            raise CommandError("face recognition is off ([face] enabled = false)")
        data = arg_text(args, "photo", limit=1 << 20)
        if args.get("parts") is None:
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CommandError("photo is not valid base64") from exc
        upload_id = f"cloud-{arg_text(args, 'upload', limit=48)}"
        up = self.uploads.add(upload_id, arg_int(args, "part", 1, MAX_PARTS), arg_int(args, "parts", 1, MAX_PARTS),
                              data)
        return self.uploads.take(upload_id) if up.complete else None

    def _put(self, user_id: str, templates: Sequence[Template], now: datetime, replace: bool,
             kept: Sequence[tuple[str, int]] = ()) -> list[int]:
        if replace:
            self.faces.replace(user_id, templates, "cloud", now, kept)
            return [t.id for t in self.faces.of_user(user_id)]
        return self.faces.add(user_id, templates, "cloud", now, kept)

    def _user(self, args: dict[str, Any]) -> str:
        user_id = arg_text(args, "user", limit=64)
        if self.faces.db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise CommandError(f"no user {shown(user_id)}")
        return user_id


def _kept(written: Written) -> list[tuple[str, int]]:
    return list(zip(written.ids, written.sizes, strict=True))


def _refusal(answer: dict[str, Any]) -> str:
    reason, message = str(answer.get("reason", "refused"))[:40], str(answer.get("message", ""))[:300]
    photo = answer.get("photo")
    where = f"photo {photo + 1}: " if isinstance(photo, int) and not isinstance(photo, bool) else ""
    return f"{where}{message} ({reason})"

