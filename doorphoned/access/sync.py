"""Credential sync: the cloud's full snapshot and versioned deltas.

What travels: users (with private PIN and cards), temp keys, named weekly schedules and door
settings. The unit keeps the version it is at (``sync_version``, in the retained state):

* ``sync.snapshot`` (version V, in parts 1..N when it does not fit one message) replaces every
  *cloud-owned* user and temp key, and every schedule; the installer's own (``doorphonectl``) stay,
  and the cloud can neither change nor remove them. Parts are staged in SQLite (sealed with the
  device key: they carry PINs) and applied when the last one arrives, so a restart loses nothing.
* ``sync.delta`` (from_version → version) applies only on top of exactly ``from_version``. A delta
  already applied is answered again as a no-op; any other gap is refused, and the unit asks for a
  snapshot with ``evt/sync`` ``{"result": "snapshot_requested"}``.

An item that breaks a rule of the unit is skipped alone, listed in ``rejected``, and fails closed: a
cloud user whose record cannot be applied is disabled, a temp key expired. A PIN or card that is still
held by another user is retried once the whole batch is in (so swaps work) and otherwise left off.
A malformed message is refused whole, before anything is written. Use counts of temp keys are never
reset by a sync: a key that is re-sent keeps the uses it had.

Why snapshots apply in time-boxed slices: every door decision runs on the same asyncio loop and
waits for it, and on a loaded unit 50 users with a PIN and a card took 50 ms and more. So:

* each slice is one short transaction that applies items until it has used ``SLICE_BUDGET`` (4 ms) of
  loop time, whatever the machine's load, then gives the loop back;
* a slice commits *without* an fsync (``synchronous=NORMAL`` for that commit only, WAL mode): the
  transaction that moves the version is a FULL one, and its fsync of the write-ahead log makes every
  slice before it durable. A power cut before it loses at most slices of a snapshot whose parts are still
  staged, and :meth:`CredentialSync.resume` applies it again at start (items are upserts; use counts are
  never reset), so nothing acknowledged is lost. The staged parts are deleted afterwards, a few per slice;
* between slices the sync waits for door requests in progress (``AccessGate.quiet``) and syncs the WAL in a
  worker thread every ``FLUSH_EVERY``: a door grant's own FULL commit then flushes its record, not the
  slices written since the last sync (that flush was the longest wait a door saw during a sync);
* unsealing and parsing the staged parts, the pure work, runs in a worker thread, not on the loop; while
  it runs the GIL switch interval is 0.5 ms (:data:`loop_first`), and each parsed part is frozen out of the
  garbage collector's full collections (see :meth:`CredentialSync._parse_staged`);
* WAL checkpoints run in the store's own thread, never inside a slice's commit (``Store.start_checkpointer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import sqlite3
import sys
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from doorphoned.access.commands import key_recipients, key_terms, user_from_args
from doorphoned.access.credentials import (
    check_key_id,
    check_private_pin,
    check_temp_pin,
    check_user_id,
)
from doorphoned.access.credstore import MAX_CARDS_PER_USER, CredentialError, CredentialStore, NotFoundError
from doorphoned.access.decide import PhoneKeyRecord, TempKeyRecord, UserRecord
from doorphoned.access.phones import read_phone_keys
from doorphoned.access.signedkeys import fingerprint, load_public_key
from doorphoned.core.clock import Clock
from doorphoned.core.commands import CommandError, arg_int, arg_opt_text, arg_text, arg_text_list
from doorphoned.core.events import SyncResult
from doorphoned.core.faces import FaceTemplates, TemplateError, check_template
from doorphoned.core.presentations import CredentialFormatError, normalise_card_uid
from doorphoned.core.schedule import ScheduleError, WeeklyWindow, parse_local_datetime
from doorphoned.core.settings import OverrideError, check_changes
from doorphoned.core.strictjson import loads

log = logging.getLogger(__name__)

CLOUD = "cloud"
VERSION_COUNTER = "sync_version"
SLICE_BUDGET = 0.004  # seconds of loop time one slice of a snapshot may use before it yields
PARTS_PER_SLICE = 8  # staged parts (~60 KB each) deleted per slice once their snapshot is applied
FLUSH_EVERY = 0.05  # seconds of slices whose writes are synced at once, off the loop
DOORS_FIRST_MAX = 0.25  # longest a slice waits for door requests in progress to finish
WORKER_SWITCH_INTERVAL = 0.0005  # the GIL switch interval while a sync worker thread runs (Python's: 5 ms)
MAX_PARTS = 2_000
STAGED_MAX_BYTES = 128 * 2**20
STAGED_KEEP = timedelta(days=1)
MAX_VERSION = 2**53
REJECTED_SHOWN = 50
SNAPSHOT_KEYS = {"version", "part", "parts", "force", "users", "temp_keys", "schedules", "doors", "revoked",
                 "signing_keys"}
DELTA_KEYS = {"from_version", "version", "upsert", "remove", "revoke"}
REVOCATION_FIELDS = {"key_id", "end"}
MAX_SIGNING_KEYS = 8
REVOCATIONS_PER_SLICE = 500
PEM_MAX = 1024
USER_FIELDS = {"user_id", "name", "department", "enabled", "doors", "schedule", "schedule_id", "pin", "cards",
               "phone_keys", "faces"}
MAX_FACES_PER_USER = 10
KEY_FIELDS = {"key_id", "name", "doors", "repeat", "start", "end", "from", "to", "days", "count", "pin", "recipients"}
SCHEDULE_FIELDS = {"schedule_id", "windows"}
KINDS = ("users", "temp_keys", "schedules")


@dataclass(frozen=True)
class UserItem:
    user: UserRecord
    pin: str | None
    cards: tuple[str, ...] | None
    schedule_id: str | None = None
    present: frozenset[str] = frozenset()  # the fields the message carried (a delta changes only those)
    phones: tuple[PhoneKeyRecord, ...] | None = None  # phone_keys absent = None (keep, or clear on a snapshot)
    faces: tuple[tuple[float, ...], ...] | None = None  # face templates (128 numbers each); None = not carried


@dataclass(frozen=True)
class KeyItem:
    key: TempKeyRecord
    pin: str


@dataclass(frozen=True)
class Revocation:
    """A signed temp key's id, refused until ``until`` (its end, Unix seconds)."""

    key_id: str
    until: int


@dataclass(frozen=True)
class ScheduleItem:
    id: str
    windows: tuple[WeeklyWindow, ...]


@dataclass
class Batch:
    """What one snapshot or delta carries, checked for shape."""

    users: list[UserItem] = field(default_factory=list)
    keys: list[KeyItem] = field(default_factory=list)
    schedules: list[ScheduleItem] = field(default_factory=list)
    doors: dict[str, Any] = field(default_factory=dict)
    has_doors: bool = False  # the message carried `doors` (a snapshot without it leaves door settings alone)
    removes: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    revoked: list[Revocation] = field(default_factory=list)  # signed temp keys refused from now on
    signing_keys: dict[str, str] | None = None  # the cloud's public keys (fingerprint -> PEM); None = unchanged

    def extend(self, other: Batch) -> None:
        self.users += other.users
        self.keys += other.keys
        self.schedules += other.schedules
        self.doors.update(other.doors)
        self.has_doors |= other.has_doors
        self.revoked += other.revoked
        if other.signing_keys is not None:
            self.signing_keys = {**(self.signing_keys or {}), **other.signing_keys}


class ItemParser:
    """Turns untrusted JSON items into records; raises CommandError naming the item."""

    def __init__(self, known_doors: frozenset[int], tz: zoneinfo.ZoneInfo) -> None:
        self.known_doors = known_doors
        self.tz = tz

    def user(self, args: dict[str, Any]) -> UserItem:
        """A user; ``pin`` / ``cards`` absent = None (the caller decides: keep or clear)."""
        _check_keys(args, USER_FIELDS, "user")
        try:
            user_id = check_user_id(arg_text(args, "user_id"))
            pin = arg_opt_text(args, "pin", limit=8)
            if pin is not None:
                check_private_pin(pin)
            cards = tuple(dict.fromkeys(normalise_card_uid(c) for c in arg_text_list(args, "cards"))) \
                if "cards" in args else None
        except CredentialFormatError as exc:
            raise CommandError(str(exc)) from exc
        if cards is not None and len(cards) > MAX_CARDS_PER_USER:
            raise CommandError(f"at most {MAX_CARDS_PER_USER} cards per user")
        schedule_id = arg_opt_text(args, "schedule_id")
        if schedule_id is not None and args.get("schedule"):
            raise CommandError("give schedule (windows) or schedule_id (a named schedule), not both")
        phones = tuple(read_phone_keys(args["phone_keys"], user_id, CLOUD, self.tz)) if "phone_keys" in args else None
        return UserItem(user_from_args(user_id, args, self.known_doors), pin, cards, schedule_id, frozenset(args),
                        phones, _faces(args))

    def key(self, args: dict[str, Any]) -> KeyItem:
        _check_keys(args, KEY_FIELDS, "temp key")
        try:
            key_id = check_key_id(arg_text(args, "key_id", limit=40))
            pin = check_temp_pin(arg_text(args, "pin", limit=8))
        except CredentialFormatError as exc:
            raise CommandError(str(exc)) from exc
        terms = key_terms(args, self.tz, self.known_doors)
        key = TempKeyRecord(key_id, arg_text(args, "name"), terms.doors, terms.repeat, terms.start, terms.end,
                            terms.window, terms.count, key_recipients(args))
        return KeyItem(key, pin)

    def schedule(self, args: dict[str, Any]) -> ScheduleItem:
        _check_keys(args, SCHEDULE_FIELDS, "schedule")
        try:
            schedule_id = check_user_id(arg_text(args, "schedule_id"))
            windows = tuple(WeeklyWindow.parse(w) for w in arg_text_list(args, "windows"))
        except (CredentialFormatError, ScheduleError) as exc:
            raise CommandError(str(exc)) from exc
        return ScheduleItem(schedule_id, windows)

    def doors(self, value: Any) -> dict[str, Any]:
        """``{"1": {"name": "Lobby", "hold_time": 4}}`` -> run-time settings ``doors.1.name`` ..."""
        if not isinstance(value, dict):
            raise CommandError("doors must be an object of door number -> settings")
        settings: dict[str, Any] = {}
        for door, values in value.items():
            text = str(door)
            if not (text.isascii() and text.isdigit()) or int(text) not in self.known_doors \
                    or not isinstance(values, dict):
                raise CommandError(f"doors: no door {str(door)[:8]!r} on this unit, or its settings are not an object")
            settings.update({f"doors.{int(door)}.{k}": v for k, v in values.items()})
        try:
            return check_changes(settings) if settings else {}
        except OverrideError as exc:
            raise CommandError(f"doors: {exc}") from exc

    def items(self, body: dict[str, Any]) -> Batch:
        batch = Batch()
        batch.users = [self.user(_item(x, "users")) for x in _list(body, "users")]
        batch.keys = [self.key(_item(x, "temp_keys")) for x in _list(body, "temp_keys")]
        batch.schedules = [self.schedule(_item(x, "schedules")) for x in _list(body, "schedules")]
        if body.get("doors") is not None:
            batch.doors = self.doors(body["doors"])
            batch.has_doors = True
        batch.revoked = self.revocations(body.get("revoked"), "revoked")
        if body.get("signing_keys") is not None:
            batch.signing_keys = self.signing_keys(body["signing_keys"])
        return batch

    def revocation(self, args: Any) -> Revocation:
        """``{"key_id": ..., "end": ISO 8601}``: ``end`` is the key's own end, after which it is dropped."""
        item = _item(args, "revoked")
        _check_keys(item, REVOCATION_FIELDS, "revocation")
        try:
            key_id = check_key_id(arg_text(item, "key_id", limit=40))
            end = parse_local_datetime(arg_text(item, "end", limit=40), self.tz)
        except (CredentialFormatError, ScheduleError) as exc:
            raise CommandError(f"revocation: {exc}") from exc
        if not 0 < end.timestamp() < 2**32:
            raise CommandError("revocation: end is out of range")
        return Revocation(key_id, int(end.timestamp()))

    def revocations(self, value: Any, name: str) -> list[Revocation]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise CommandError(f"{name} must be a list of {{key_id, end}}")
        return [self.revocation(item) for item in value]

    @staticmethod
    def signing_keys(value: Any) -> dict[str, str]:
        """The cloud's public keys (PEM texts), at most 8; each must be a P-256 key."""
        if not isinstance(value, list) or len(value) > MAX_SIGNING_KEYS \
                or not all(isinstance(v, str) and len(v) <= PEM_MAX for v in value):
            raise CommandError(f"signing_keys must be a list of at most {MAX_SIGNING_KEYS} PEM public keys")
        keys = {}
        for index, pem in enumerate(value, start=1):
            try:
                keys[fingerprint(load_public_key(pem.encode())).hex()] = pem
            except (ValueError, UnicodeEncodeError) as exc:
                raise CommandError(f"signing_keys[{index}]: {str(exc)[:80]}") from None
        return keys

    def removes(self, body: Any) -> dict[str, list[str]]:
        if body is None:
            return {k: [] for k in KINDS}
        if not isinstance(body, dict) or set(body) - set(KINDS):
            raise CommandError(f"remove must be an object with lists {', '.join(KINDS)}")
        out = {}
        for kind in KINDS:
            ids = body.get(kind) or []
            if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
                raise CommandError(f"remove.{kind} must be a list of ids")
            out[kind] = ids
        return out


def _faces(args: dict[str, Any]) -> tuple[tuple[float, ...], ...] | None:
    """A user's ``faces``: a list of up to 10 templates of 128 finite numbers (issue 12); absent = None."""
    if "faces" not in args:
        return None
    value = args["faces"]
    if not isinstance(value, list) or len(value) > MAX_FACES_PER_USER:
        raise CommandError(f"faces must be a list of at most {MAX_FACES_PER_USER} templates")
    try:
        return tuple(check_template(t) for t in value)
    except TemplateError as exc:
        raise CommandError(f"faces: {exc}") from None


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name) or []
    if not isinstance(value, list):
        raise CommandError(f"{name} must be a list")
    return value


def _item(value: Any, kind: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CommandError(f"every entry of {kind} must be an object")
    return value


def _check_keys(body: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise CommandError(f"{what}: unknown field {unknown[0][:40]!r}")


@dataclass
class Outcome:
    applied: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    removed: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    rejected: list[dict[str, str]] = field(default_factory=list)
    revoked: int = 0  # signed temp keys newly revoked

    def reject(self, kind: str, item_id: str, error: Exception | str) -> None:
        message = error if isinstance(error, str) else str(error.args[0] if error.args else error)
        self.rejected.append({"kind": kind, "id": item_id, "error": message})

    def summary(self, version: int) -> dict[str, Any]:
        return {"version": version, "applied": self.applied, "removed": self.removed, "revoked": self.revoked,
                "rejected": self.rejected[:REJECTED_SHOWN], "rejected_count": len(self.rejected)}


class Settings(Protocol):
    """Door settings of a sync go through the run-time settings (validated first, applied after)."""

    def check(self, changes: dict[str, Any], replace_prefix: str) -> None:
        """Raise CommandError (naming the key) if the settings would not make a valid configuration."""

    async def apply(self, changes: dict[str, Any], replace_prefix: str) -> Any: ...


class CredentialSync:
    """Applies snapshots and deltas to the credential store; the decisions stay with the access core."""

    def __init__(self, creds: CredentialStore, clock: Clock, parser: Callable[[], ItemParser],
                 settings: Settings, publish: Callable[[SyncResult], None],
                 doors_quiet: Callable[[], Awaitable[None]] | None = None, faces: FaceTemplates | None = None) -> None:
        self.creds = creds
        self.faces = faces  # the face store (issue 12): a user's templates travel with their PIN and cards
        self._doors_quiet = doors_quiet
        self._flushed = 0.0  # perf_counter of the last WAL sync between slices
        self.clock = clock
        self._parser = parser
        self._settings = settings
        self._publish = publish
        self._lock = asyncio.Lock()
        self._pending: list[tuple[str, str, str]] = []  # (pin|card, user id, value) held by someone else

    # ------------------------------------------------------------ version
    @property
    def version(self) -> int | None:
        return sync_version(self.creds.db)

    def _set_version(self, version: int) -> None:
        self.creds.db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name)"
                              " DO UPDATE SET value = excluded.value", (VERSION_COUNTER, version))

    # ------------------------------------------------------------ snapshot
    async def snapshot(self, args: dict[str, Any]) -> dict[str, Any]:
        _check_keys(args, SNAPSHOT_KEYS, "sync.snapshot")
        version = arg_int(args, "version", 0, MAX_VERSION, None)
        parts = arg_int(args, "parts", 1, MAX_PARTS, 1)
        part = arg_int(args, "part", 1, parts, 1)
        force = args.get("force", False)
        if not isinstance(force, bool):
            raise CommandError("force must be true or false")
        current = self.version
        if current is not None and version < current and not force:
            raise CommandError(f"snapshot version {version} is older than the unit's {current}; "
                               "send force=true to roll back")
        # A malformed part is refused now, not when the last one arrives; parsing and sealing a part of
        # thousands of users is pure work, done off the loop.
        with loop_first():
            batch, sealed = await asyncio.to_thread(self._check_and_seal, self._parser(), version, part, args)
        if batch.has_doors:
            self._settings.check(batch.doors, "doors.")
        async with self._lock:
            staged = self._stage(version, part, parts, args, sealed)
            if staged < parts:
                return {"version": version, "staged": staged, "parts": parts}
            return await self._apply_staged(version)

    def _check_and_seal(self, parser: ItemParser, version: int, part: int, body: dict[str, Any]) -> tuple[Batch, bytes]:
        """(worker thread) The part's items, checked, and the part sealed with the device key (it carries PINs)."""
        return parser.items(body), self._seal(version, part, body)

    def _seal(self, version: int, part: int, body: dict[str, Any]) -> bytes:
        return self.creds.seal(json.dumps(body, separators=(",", ":")), f"sync:{version}:{part}")

    async def resume(self) -> None:
        """At start: finish a snapshot whose parts had all arrived when the unit stopped (crash, power cut).

        Its last part was acknowledged as received; without this, a restart in the middle of applying
        would leave it half-done until the cloud noticed the old ``sync_version`` and sent it again.
        Parts of a snapshot that never completed are dropped after a day.
        """
        async with self._lock:
            cutoff = (self.clock.now() - STAGED_KEEP).isoformat()
            with self.creds.transaction():
                self.creds.db.execute("DELETE FROM sync_parts WHERE version IN (SELECT version FROM sync_parts"
                                      " GROUP BY version HAVING max(staged) < ?)", (cutoff,))
                if self.version is not None:  # applied already; only their removal was cut short
                    self.creds.db.execute("DELETE FROM sync_parts WHERE version = ?", (self.version,))
            row = self.creds.db.execute("SELECT version, parts, count(*) FROM sync_parts GROUP BY version").fetchone()
            if row is None or row[2] < row[1]:
                return
            log.warning("sync: finishing snapshot %d, interrupted by a restart", row[0])
            await self._apply_staged(int(row[0]))

    def _stage(self, version: int, part: int, parts: int, body: dict[str, Any], sealed: bytes | None = None) -> int:
        db = self.creds.db
        sealed = sealed if sealed is not None else self._seal(version, part, body)
        with self.creds.transaction():
            db.execute("DELETE FROM sync_parts WHERE version != ? OR parts != ?", (version, parts))
            held = db.execute("SELECT coalesce(sum(length(body)), 0) FROM sync_parts WHERE part != ?",
                              (part,)).fetchone()[0]
            if held + len(sealed) > STAGED_MAX_BYTES:
                raise CommandError(f"a snapshot may stage at most {STAGED_MAX_BYTES // 2**20} MiB")
            db.execute("INSERT INTO sync_parts (version, part, parts, body, staged) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT (version, part) DO UPDATE SET body = excluded.body, staged = excluded.staged",
                       (version, part, parts, sealed, self.clock.now().isoformat()))
            return int(db.execute("SELECT count(*) FROM sync_parts WHERE version = ?", (version,)).fetchone()[0])

    def _read_and_parse_staged(self, parser: ItemParser, version: int) -> Batch:
        """(worker thread) The staged parts read on a connection of the thread's own (megabytes: reading
        them on the loop was one more stall), then unsealed and parsed."""
        with self.creds.reader() as db:
            rows = db.execute("SELECT part, body FROM sync_parts WHERE version = ? ORDER BY part",
                              (version,)).fetchall()
        return self._parse_staged(parser, version, rows)

    def _parse_staged(self, parser: ItemParser, version: int, rows: list[tuple[int, bytes]]) -> Batch:
        """(worker thread) Unseal and parse every staged part: seconds of pure work for 100,000 users.

        100,000 parsed users are about a million objects the garbage collector tracks; each full collection
        walked them all in one go (tens of ms with the GIL held, on the parsing worker or on the loop
        between two slices), the longest stall doors saw during a sync. ``gc.freeze()`` after each part
        moves what is alive to the generation the collector skips (the daemon froze its start-up objects
        the same way). The items are plain data without cycles: reference counting frees them as the
        slices apply them, frozen or not."""
        batch = Batch()
        for part, body in rows:
            batch.extend(parser.items(loads(self.creds.unseal(body, f"sync:{version}:{part}"))))
            gc.freeze()
        return batch

    async def _apply_staged(self, version: int) -> dict[str, Any]:
        with loop_first():
            batch = await asyncio.to_thread(self._read_and_parse_staged, self._parser(), version)
        outcome = await self._apply_snapshot(batch)
        with self.creds.transaction():  # synchronous=FULL: this commit's fsync makes every slice durable
            self._set_version(version)
        await self._drop_staged(version)
        return self._report("snapshot", version, outcome)

    async def _drop_staged(self, version: int) -> None:
        """The applied snapshot's parts go a few at a time (megabytes of pages to free: one DELETE was a
        stall of its own). A restart before they are all gone drops the rest (``resume``): parts of the
        version the unit already has are never applied again."""
        while True:
            with self._slice():
                gone = self.creds.db.execute(
                    "DELETE FROM sync_parts WHERE rowid IN (SELECT rowid FROM sync_parts WHERE version = ? LIMIT ?)",
                    (version, PARTS_PER_SLICE)).rowcount
            if gone < PARTS_PER_SLICE:
                return
            await self._between_slices()

    async def _apply_snapshot(self, batch: Batch) -> Outcome:
        """Removals first (a user dropped by the cloud loses access at once and frees their PIN and cards),
        then schedules, users, keys, the credentials that were held by someone else, stale schedules."""
        outcome = Outcome()
        self._pending = []
        with loop_first():
            stale = await asyncio.to_thread(self._stale, batch)
        for kind in ("users", "temp_keys"):
            await self._in_chunks(stale[kind], kind, self._remover(kind, outcome), outcome, count=False)
        kept_schedules = {i.id for i in batch.schedules}  # before the slices drop them
        await self._in_chunks(batch.schedules, "schedules", self._put_schedule, outcome)
        await self._in_chunks(batch.users, "users", self._put_user_snapshot, outcome, on_reject=self._fail_closed)
        await self._in_chunks(batch.keys, "temp_keys", self._put_key, outcome, on_reject=self._fail_closed)
        with self.creds.transaction():
            self._retry_pending(outcome)
        stale_schedules = sorted(self.creds.schedule_ids() - kept_schedules)
        await self._in_chunks(stale_schedules, "schedules", self._remover("schedules", outcome), outcome, count=False)
        await self._apply_signed_in_slices(batch, outcome)
        if batch.has_doors:
            await self._apply_settings(batch.doors, "doors.", outcome)
        return outcome

    async def _apply_signed_in_slices(self, batch: Batch, outcome: Outcome) -> None:
        """A snapshot's revocations (up to 100,000) in slices like its users: one transaction of them all held
        the loop for most of a second."""
        revoked, batch.revoked = batch.revoked, []
        with self._slice():
            self._apply_signed(batch, outcome)
        for start in range(0, len(revoked), REVOCATIONS_PER_SLICE):
            with self._slice():
                self._revoke(revoked[start:start + REVOCATIONS_PER_SLICE], outcome)
            await self._between_slices()

    def _apply_signed(self, batch: Batch, outcome: Outcome) -> None:
        """What offline-signed keys need: the revocations (added, never dropped by a sync: a revocation goes
        only when its key has ended) and, when the message carries them, the cloud's public keys."""
        now = self.clock.now()
        self.creds.prune_signed(now)
        self._revoke(batch.revoked, outcome)
        if batch.signing_keys is not None:
            self.creds.replace_signing_keys(batch.signing_keys, now)

    def _revoke(self, items: list[Revocation], outcome: Outcome) -> None:
        now = self.clock.now()
        for item in items:
            try:
                outcome.revoked += self.creds.revoke(item.key_id, item.until, "sync", now)
            except CredentialError as exc:
                outcome.reject("revoked", item.key_id, exc)

    def _stale(self, batch: Batch) -> dict[str, list[str]]:
        """(worker thread) The cloud's users and keys that the snapshot no longer has."""
        kept = {"users": {i.user.id for i in batch.users}, "temp_keys": {i.key.id for i in batch.keys}}
        with self.creds.reader() as db:
            return {kind: sorted(self.creds.ids_from(kind, CLOUD, db) - kept[kind]) for kind in kept}

    async def _in_chunks(self, items: list[Any], kind: str, apply: Callable[[Any], None], outcome: Outcome,
                         count: bool = True, on_reject: Callable[[Any], None] | None = None) -> None:
        """Apply ``items`` in slices of at most ``SLICE_BUDGET`` of loop time each, yielding in between.

        Each item is dropped from ``items`` once applied: 100,000 users freed at the end of the apply
        were one 30-100 ms stall (deallocation holds the GIL); freed one by one, it is spread thin."""
        done = 0
        while done < len(items):
            with self._slice():
                deadline = time.perf_counter() + SLICE_BUDGET
                start = done
                while done < len(items) and (done == start or time.perf_counter() < deadline):
                    self._apply_each(kind, items[done:done + 1], apply, outcome, count, on_reject)
                    items[done] = None
                    done += 1
            await self._between_slices()

    async def _between_slices(self) -> None:
        """What every bulk change does after each slice: let door decisions in; wait for a door request in
        progress (bounded: a keypad flood must not stall the sync for good); now and then let a checkpoint
        complete so the WAL rewinds; and sync the slices' writes off the loop, so a door grant's own fsync
        does not flush them."""
        await asyncio.sleep(0)
        if self._doors_quiet is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._doors_quiet(), DOORS_FIRST_MAX)
        await self.creds.settle_wal()
        if time.perf_counter() - self._flushed >= FLUSH_EVERY:
            await self.creds.flush_wal()
            self._flushed = time.perf_counter()

    @contextlib.contextmanager
    def _slice(self) -> Iterator[None]:
        """One slice's transaction, committed without an fsync (see the module docstring for why that is safe)."""
        db = self.creds.db
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.creds.transaction():
                yield
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _apply_each(self, kind: str, items: list[Any], apply: Callable[[Any], None], outcome: Outcome,
                    count: bool, on_reject: Callable[[Any], None] | None = None) -> None:
        """Each item in its own savepoint: one that breaks a rule is rolled back, listed, and fails closed."""
        for item in items:
            try:
                with self.creds.savepoint():
                    apply(item)
                outcome.applied[kind] += count
            except (CredentialError, NotFoundError) as exc:
                outcome.reject(kind, _item_id(item), exc)
                if on_reject is not None:
                    on_reject(item)

    async def _apply_settings(self, doors: dict[str, Any], replace_prefix: str, outcome: Outcome) -> None:
        try:
            await self._settings.apply(doors, replace_prefix)
        except CommandError as exc:  # checked before anything was written; only a concurrent change gets here
            outcome.reject("doors", "doors", exc)

    # ------------------------------------------------------------ delta
    async def delta(self, args: dict[str, Any]) -> dict[str, Any]:
        _check_keys(args, DELTA_KEYS, "sync.delta")
        start = arg_int(args, "from_version", 0, MAX_VERSION, None)
        version = arg_int(args, "version", start + 1, MAX_VERSION, None)
        upsert = args.get("upsert") or {}
        if not isinstance(upsert, dict):
            raise CommandError("upsert must be an object with lists users, temp_keys, schedules (and doors)")
        _check_keys(upsert, {*KINDS, "doors"}, "upsert")
        parser = self._parser()
        batch = parser.items(upsert)
        batch.removes = parser.removes(args.get("remove"))
        batch.revoked = parser.revocations(args.get("revoke"), "revoke")
        async with self._lock:
            current = self.version
            if current is not None and start < current and version <= current:
                return {"version": current, "already_applied": True}
            if current != start:
                self._publish(SyncResult(self.clock.now(), "snapshot_requested", current,
                                         f"delta {start}->{version} does not follow version {current}"))
                raise CommandError(f"version gap: the unit is at {current}, this delta starts at {start}; "
                                   "a snapshot was requested")
            if batch.has_doors:
                self._settings.check(batch.doors, "")
            outcome = self._apply_delta(batch, version)
            if batch.has_doors:
                await self._apply_settings(batch.doors, "", outcome)
        return self._report("delta", version, outcome)

    def _apply_delta(self, batch: Batch, version: int) -> Outcome:
        outcome = Outcome()
        self._pending = []
        steps: list[tuple[str, list[Any], Callable[[Any], None], bool, Callable[[Any], None] | None]] = [
            ("users", batch.removes["users"], self._remover("users", outcome), False, None),
            ("temp_keys", batch.removes["temp_keys"], self._remover("temp_keys", outcome), False, None),
            ("schedules", batch.schedules, self._put_schedule, True, None),
            ("users", batch.users, self._put_user_delta, True, self._fail_closed),
            ("temp_keys", batch.keys, self._put_key, True, self._fail_closed),
        ]
        with self.creds.transaction():
            for kind, items, apply, count, on_reject in steps:
                self._apply_each(kind, items, apply, outcome, count, on_reject)
            self._retry_pending(outcome)
            self._apply_each("schedules", batch.removes["schedules"], self._remover("schedules", outcome), outcome,
                             False)
            self._apply_signed(batch, outcome)
            self._set_version(version)
        return outcome

    # ------------------------------------------------------------ one item
    def _put_schedule(self, item: ScheduleItem) -> None:
        self.creds.put_schedule(item.id, item.windows)

    def _owned(self, table: str, item_id: str) -> str | None:
        return cloud_may_change(self.creds, table, item_id)

    def _put_user(self, item: UserItem, full: bool) -> None:
        """Snapshot items are the whole truth (no pin = no PIN); a delta changes only the fields it carries."""
        exists = self._owned("users", item.user.id) is not None
        user, schedule_id = (item.user, item.schedule_id) if full or not exists else self._merged(item)
        if schedule_id is not None:
            windows = self.creds.schedule_windows(schedule_id)
            if windows is None:
                raise CredentialError(f"no schedule {schedule_id}")
            user = dataclasses.replace(user, windows=windows)
        now = self.clock.now()
        self.creds.put_user(user, now, CLOUD, schedule_id)
        if item.pin is not None or full:
            self.creds.clear_pin(user.id)
        if item.pin is not None:
            self._try_credential("pin", user.id, item.pin)
        if item.cards is not None or full:
            self.creds.clear_cards(user.id)
            for uid in item.cards or ():
                self._try_credential("card", user.id, uid)
        if item.phones is not None or full:
            self.creds.replace_phone_keys(user.id, list(item.phones or ()), now)
        if self.faces is not None and (item.faces is not None or full):
            try:
                self.faces.replace(user.id, item.faces or (), CLOUD, now)
            except ValueError as exc:
                raise CredentialError(f"faces: {exc}") from exc

    def _merged(self, item: UserItem) -> tuple[UserRecord, str | None]:
        old = self.creds.get_user(item.user.id)
        assert old is not None
        new, present = item.user, item.present
        changed: dict[str, Any] = {n: getattr(new, n) for n in ("department", "enabled", "doors") if n in present}
        if "schedule" in present or "schedule_id" in present:
            changed["windows"] = new.windows
            schedule_id = item.schedule_id
        else:
            schedule_id = self.creds.user_schedule_id(old.id)
        return dataclasses.replace(old, name=new.name, **changed), schedule_id

    def _try_credential(self, kind: str, user_id: str, value: str) -> None:
        """Give a PIN or card; if another user still holds it, try again once the whole batch is in."""
        try:
            with self.creds.savepoint():
                self._give(kind, user_id, value)
        except CredentialError:
            self._pending.append((kind, user_id, value))

    def _give(self, kind: str, user_id: str, value: str) -> None:
        if kind == "pin":
            self.creds.set_pin(user_id, value)
        else:
            self.creds.add_card(user_id, value, self.clock.now())

    def _retry_pending(self, outcome: Outcome) -> None:
        pending, self._pending = self._pending, []
        for kind, user_id, value in pending:
            try:
                with self.creds.savepoint():
                    self._give(kind, user_id, value)
            except (CredentialError, NotFoundError) as exc:
                what = "PIN" if kind == "pin" else f"card {value}"  # never the PIN itself
                outcome.reject("users", user_id, f"{what} left off: {exc.args[0] if exc.args else exc}")

    def _put_user_snapshot(self, item: UserItem) -> None:
        self._put_user(item, full=True)

    def _put_user_delta(self, item: UserItem) -> None:
        self._put_user(item, full=False)

    def _put_key(self, item: KeyItem) -> None:
        self._owned("temp_keys", item.key.id)
        self.creds.put_temp_key(item.key, item.pin, self.clock.now(), CLOUD)

    def _fail_closed(self, item: UserItem | KeyItem) -> None:
        """A cloud user or key whose new record was refused must not keep its old, wider grant."""
        if isinstance(item, UserItem) and self.creds.source_of("users", item.user.id) == CLOUD:
            self.creds.disable_user(item.user.id)
        elif isinstance(item, KeyItem) and self.creds.source_of("temp_keys", item.key.id) == CLOUD:
            self.creds.expire_key(item.key.id)

    def _remover(self, kind: str, outcome: Outcome) -> Callable[[str], None]:
        remove = {"users": self.creds.remove_user, "temp_keys": self.creds.remove_key,
                  "schedules": self.creds.remove_schedule}[kind]

        def apply(item_id: str) -> None:
            if kind != "schedules" and self._owned(kind, item_id) is None:
                return  # already gone: removing is idempotent
            try:
                remove(item_id)
            except NotFoundError:
                return
            outcome.removed[kind] += 1
        return apply

    def _report(self, what: str, version: int, outcome: Outcome) -> dict[str, Any]:
        result = outcome.summary(version)
        detail = f"{what} {version}: " + ", ".join(f"{k} {v}" for k, v in outcome.applied.items())
        if outcome.rejected:
            detail += f"; {len(outcome.rejected)} rejected"
            log.warning("sync: %s (first: %s)", detail, outcome.rejected[0])
        else:
            log.info("sync: %s", detail)
        self._publish(SyncResult(self.clock.now(), "applied", version, detail, len(outcome.rejected)))
        return result


class _LoopFirst:
    """While sync work runs in a worker thread, hand the GIL back to the loop within 0.5 ms.

    A thread that wants the GIL waits for the holder's switch interval (5 ms by default) before it
    forces a switch; a keypad press needs the GIL several times on its way to the relay, so a parsing
    worker could add tens of ms to it. The worker pays a little in more frequent switches. Nested and
    concurrent uses share one setting; the last to leave puts Python's back.
    """

    def __init__(self) -> None:
        self._users = 0
        self._saved = sys.getswitchinterval()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self._users == 0:
            self._saved = sys.getswitchinterval()
            sys.setswitchinterval(WORKER_SWITCH_INTERVAL)
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0:
                sys.setswitchinterval(self._saved)


loop_first = _LoopFirst()


def sync_version(db: sqlite3.Connection) -> int | None:
    """The version of the cloud's credential data this unit holds (None before the first snapshot)."""
    row = db.execute("SELECT value FROM counters WHERE name = ?", (VERSION_COUNTER,)).fetchone()
    return None if row is None else int(row[0])


def cloud_may_change(creds: CredentialStore, table: str, item_id: str) -> str | None:
    """The owner of a user or temp key ('cloud', or None when there is none); raises CredentialError for
    an installer's (local) one, which is out of the cloud's reach (sync and single commands alike)."""
    source = creds.source_of(table, item_id)
    if source == "local":
        what = "user" if table == "users" else "temp key"
        raise CredentialError(f"{what} {item_id} was created on this unit by an installer: "
                              "the cloud cannot change or remove it")
    return source


def _item_id(item: Any) -> str:
    if isinstance(item, UserItem):
        return item.user.id
    if isinstance(item, KeyItem):
        return item.key.id
    if isinstance(item, ScheduleItem):
        return item.id
    return str(item)
