"""Users, PINs, cards, temp keys, use counts and lockouts in the SQLite store.

Lookups are single indexed queries (PIN by keyed hash, card by UID), so a decision costs the same
with ten users or a hundred thousand. Every change is one transaction; the use count of a temp key
is consumed together with the door-log record of the grant (see :meth:`record_access`), so a
``kill -9`` can waste a use but never give an extra one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from doorphoned.access.credentials import pin_hash
from doorphoned.access.decide import PhoneKeyRecord, TempKeyRecord, UserRecord
from doorphoned.access.devicekey import DeviceKey
from doorphoned.core.lockout import LockoutState
from doorphoned.core.schedule import WeeklyWindow
from doorphoned.core.store import DoorLogEntry, Store, joined_transaction

log = logging.getLogger(__name__)

MAX_CARDS_PER_USER = 5
MAX_REVOCATIONS = 100_000  # revoked key ids kept at once (each until its key's end); beyond it a revocation is refused


class CredentialError(ValueError):
    """A change that would break a rule (duplicate, collision, limit); the message is for the installer."""


class NotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class Recorded:
    """What one access record wrote: its door-log id, whether it was folded into an earlier refusal, and
    a repeat-never key's use count on the door after this use (None when no use was taken)."""

    log_id: int
    folded: bool
    uses: int | None


class _NoUseLeftError(Exception):
    """Raised inside a transaction to roll it back when a temp key's last use was taken meanwhile."""


class CredentialStore:
    def __init__(self, store: Store, key: DeviceKey) -> None:
        self._store = store
        self._key = key
        self.signing_generation = 0  # bumped when the synced cloud signing keys change (TrustProvider rebuilds)
        # Run after every outermost commit: what other folders keep beside the rows (kept face photos) follows
        # a removal right away; a failure is logged, never raised (the change is committed).
        self.after_commit: list[Callable[[], object]] = []

    @property
    def db(self) -> sqlite3.Connection:
        return self._store.db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable change; nested uses join the outer transaction (bulk loads)."""
        joined = self.db.in_transaction
        with joined_transaction(self.db):
            yield
        if not joined:
            self._committed()

    def _committed(self) -> None:
        for hook in self.after_commit:
            try:
                hook()
            except Exception:
                log.exception("after a credential change: %s failed", getattr(hook, "__qualname__", hook))

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit inside a transaction: a failing item of a sync rolls back alone."""
        self.db.execute("SAVEPOINT item")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO item")
            self.db.execute("RELEASE item")
            raise
        self.db.execute("RELEASE item")

    def hash(self, pin: str) -> bytes:
        return pin_hash(self._key.hash_key, pin)

    # ------------------------------------------------------------ users
    def add_user(self, user: UserRecord, now: datetime) -> None:
        try:
            with self.transaction():
                self.db.execute(
                    "INSERT INTO users (id, name, department, enabled, doors, windows, created, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (user.id, user.name, user.department, int(user.enabled), _doors_json(user.doors),
                     _windows_json(user.windows), now.isoformat(), now.isoformat()))
        except sqlite3.IntegrityError as exc:
            raise CredentialError(f"a user with id {user.id!r} already exists") from exc

    def get_user(self, user_id: str) -> UserRecord | None:
        row = self.db.execute("SELECT id, name, department, enabled, doors, windows FROM users WHERE id = ?",
                              (user_id,)).fetchone()
        return _user(row) if row else None

    def list_users(self, limit: int = 1000, offset: int = 0) -> list[UserRecord]:
        rows = self.db.execute("SELECT id, name, department, enabled, doors, windows FROM users ORDER BY name, id"
                               " LIMIT ? OFFSET ?", (limit, offset))
        return [_user(r) for r in rows]

    def user_facts(self, user_id: str) -> dict[str, Any]:
        """What `user show` prints beyond the record: whether a PIN is set, which cards."""
        has_pin = self.db.execute("SELECT 1 FROM pins WHERE user_id = ?", (user_id,)).fetchone() is not None
        cards = [r[0] for r in self.db.execute("SELECT uid FROM cards WHERE user_id = ? ORDER BY added", (user_id,))]
        phones = [r[0] for r in self.db.execute("SELECT id FROM phone_keys WHERE user_id = ? ORDER BY id", (user_id,))]
        return {"pin_set": has_pin, "cards": cards, "phone_keys": phones}

    def remove_user(self, user_id: str) -> None:
        """The user and every credential of theirs (PIN, cards: ON DELETE CASCADE) go in one step."""
        with self.transaction():
            cursor = self.db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        if cursor.rowcount == 0:
            raise NotFoundError(f"no user {user_id!r}")

    def put_user(self, user: UserRecord, now: datetime, source: str, schedule_id: str | None = None) -> None:
        """Create or replace a user row, recording who owns it (sync); credentials stay as they are."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO users (id, name, department, enabled, doors, windows, created, updated, source,"
                " schedule_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " name = excluded.name, department = excluded.department, enabled = excluded.enabled,"
                " doors = excluded.doors, windows = excluded.windows, updated = excluded.updated,"
                " source = excluded.source, schedule_id = excluded.schedule_id",
                (user.id, user.name, user.department, int(user.enabled), _doors_json(user.doors),
                 _windows_json(user.windows), now.isoformat(), now.isoformat(), source, schedule_id))

    def source_of(self, table: str, item_id: str) -> str | None:
        """Who owns a user or temp key: 'local' (installer), 'cloud' (sync), or None when there is none."""
        if table not in ("users", "temp_keys"):
            raise ValueError(table)
        row = self.db.execute(f"SELECT source FROM {table} WHERE id = ?", (item_id,)).fetchone()  # noqa: S608
        return None if row is None else str(row[0])

    def user_schedule_id(self, user_id: str) -> str | None:
        row = self.db.execute("SELECT schedule_id FROM users WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else row[0]

    def disable_user(self, user_id: str) -> bool:
        with self.transaction():
            return self.db.execute("UPDATE users SET enabled = 0 WHERE id = ?", (user_id,)).rowcount > 0

    def clear_cards(self, user_id: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM cards WHERE user_id = ?", (user_id,))

    def seal(self, text: str, context: str) -> bytes:
        """Secrets that must be kept readable for a while (staged sync parts) are sealed with the device key."""
        return self._key.seal(text, context)

    def unseal(self, sealed: bytes, context: str) -> str:
        return self._key.unseal(sealed, context)

    def ids_from(self, table: str, source: str, db: sqlite3.Connection | None = None) -> set[str]:
        """Ids of the users or temp keys a source owns (what a snapshot may remove); ``db``: a
        :meth:`reader` in a worker thread (100,000 ids are tens of ms of work)."""
        if table not in ("users", "temp_keys"):
            raise ValueError(table)
        rows = (db or self.db).execute(f"SELECT id FROM {table} WHERE source = ?", (source,))  # noqa: S608
        return {r[0] for r in rows}

    async def settle_wal(self) -> None:
        """Between two slices of a bulk change: see :meth:`Store.settle_wal`."""
        await self._store.settle_wal()

    async def flush_wal(self) -> None:
        """Between two slices committed without fsync: see :meth:`Store.flush_wal`."""
        await self._store.flush_wal()

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own, for a worker thread: it sees what is committed."""
        db = sqlite3.connect(f"file:{self._store.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            yield db
        finally:
            db.close()

    def set_pin(self, user_id: str, pin: str) -> None:
        digest = self.hash(pin)
        with self.transaction():
            if self.get_user(user_id) is None:
                raise NotFoundError(f"no user {user_id!r}")
            owner = self.db.execute("SELECT user_id, key_id FROM pins WHERE hash = ?", (digest,)).fetchone()
            if owner and owner[0] != user_id:
                raise CredentialError("this PIN is already in use on this unit; choose another")
            self.db.execute("DELETE FROM pins WHERE user_id = ?", (user_id,))
            self.db.execute("INSERT INTO pins (hash, user_id) VALUES (?, ?)", (digest, user_id))

    def clear_pin(self, user_id: str) -> bool:
        with self.transaction():
            return self.db.execute("DELETE FROM pins WHERE user_id = ?", (user_id,)).rowcount > 0

    def add_card(self, user_id: str, uid: str, now: datetime) -> None:
        with self.transaction():
            if self.get_user(user_id) is None:
                raise NotFoundError(f"no user {user_id!r}")
            holder = self.db.execute("SELECT user_id FROM cards WHERE uid = ?", (uid,)).fetchone()
            if holder:
                raise CredentialError(f"card {uid} is already enrolled to user {holder[0]!r}")
            count = self.db.execute("SELECT count(*) FROM cards WHERE user_id = ?", (user_id,)).fetchone()[0]
            if count >= MAX_CARDS_PER_USER:
                raise CredentialError(f"user {user_id!r} already has {MAX_CARDS_PER_USER} cards (the maximum)")
            self.db.execute("INSERT INTO cards (uid, user_id, added) VALUES (?, ?, ?)", (uid, user_id, now.isoformat()))

    def replace_cards(self, user_id: str, uids: list[str], now: datetime) -> None:
        """The user's cards become exactly ``uids`` (cloud sync); a UID held by another user is refused."""
        with self.transaction():
            self.db.execute("DELETE FROM cards WHERE user_id = ?", (user_id,))
            for uid in dict.fromkeys(uids):
                self.add_card(user_id, uid, now)

    def remove_card(self, user_id: str, uid: str) -> None:
        with self.transaction():
            cursor = self.db.execute("DELETE FROM cards WHERE uid = ? AND user_id = ?", (uid, user_id))
        if cursor.rowcount == 0:
            raise NotFoundError(f"user {user_id!r} has no card {uid}")

    # ------------------------------------------------------------ named schedules
    def schedule_windows(self, schedule_id: str) -> tuple[WeeklyWindow, ...] | None:
        row = self.db.execute("SELECT windows FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        return None if row is None else tuple(WeeklyWindow.from_dict(w) for w in json.loads(row[0]))

    def put_schedule(self, schedule_id: str, windows: tuple[WeeklyWindow, ...]) -> int:
        """Create or replace a schedule; every user on it gets the new windows. Returns how many users."""
        text = _windows_json(windows)
        with self.transaction():
            self.db.execute("INSERT INTO schedules (id, windows) VALUES (?, ?) ON CONFLICT (id)"
                            " DO UPDATE SET windows = excluded.windows", (schedule_id, text))
            return self.db.execute("UPDATE users SET windows = ? WHERE schedule_id = ?", (text, schedule_id)).rowcount

    def remove_schedule(self, schedule_id: str) -> None:
        with self.transaction():
            users = self.db.execute("SELECT count(*) FROM users WHERE schedule_id = ?", (schedule_id,)).fetchone()[0]
            if users:
                raise CredentialError(f"schedule {schedule_id!r} is still used by {users} user(s)")
            if self.db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 0:
                raise NotFoundError(f"no schedule {schedule_id!r}")

    def schedule_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM schedules")}

    # ------------------------------------------------------------ temp keys
    def put_temp_key(self, key: TempKeyRecord, pin: str, now: datetime, source: str) -> None:
        """Create a temp key or change it in place (sync): its use counts are kept, never reset."""
        if self.get_key(key.id) is None:
            self.add_temp_key(key, pin, now, created_by=source, source=source)
            return
        digest = self.hash(pin)
        with self.transaction():
            self.db.execute(
                "UPDATE temp_keys SET name = ?, doors = ?, repeat = ?, valid_from = ?, valid_until = ?, window = ?,"
                " each_door_counts = ?, pin_sealed = ?, source = ?, recipients = ? WHERE id = ?",
                (key.name, json.dumps(sorted(key.doors)), key.repeat, key.start.isoformat(), key.end.isoformat(),
                 json.dumps(key.window.as_dict()) if key.window else None, key.each_door_counts,
                 self._key.seal(pin, key.id), source, json.dumps(list(key.recipients)), key.id))
            owner = self.db.execute("SELECT key_id FROM pins WHERE hash = ?", (digest,)).fetchone()
            if owner and owner[0] != key.id:
                raise CredentialError("this PIN collides with a PIN already in use on this unit")
            self.db.execute("DELETE FROM pins WHERE key_id = ?", (key.id,))
            self.db.execute("INSERT INTO pins (hash, key_id) VALUES (?, ?)", (digest, key.id))

    def add_temp_key(self, key: TempKeyRecord, pin: str, now: datetime, created_by: str = "",
                     source: str = "local") -> None:
        digest = self.hash(pin)
        try:
            with self.transaction():
                self.db.execute(
                    "INSERT INTO temp_keys (id, name, doors, repeat, valid_from, valid_until, window,"
                    " each_door_counts, pin_sealed, created, created_by, source, recipients)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key.id, key.name, json.dumps(sorted(key.doors)), key.repeat, key.start.isoformat(),
                     key.end.isoformat(), json.dumps(key.window.as_dict()) if key.window else None,
                     key.each_door_counts, self._key.seal(pin, key.id), now.isoformat(), created_by, source,
                     json.dumps(list(key.recipients))))
                if self.db.execute("SELECT 1 FROM pins WHERE hash = ?", (digest,)).fetchone():
                    raise CredentialError("this PIN collides with a PIN already in use on this unit")
                self.db.execute("INSERT INTO pins (hash, key_id) VALUES (?, ?)", (digest, key.id))
        except sqlite3.IntegrityError as exc:
            raise CredentialError(f"a temp key with id {key.id!r} already exists") from exc

    def get_key(self, key_id: str) -> TempKeyRecord | None:
        row = self.db.execute(_KEY_BY_ID, (key_id,)).fetchone()
        return _key(row) if row else None

    def list_keys(self, limit: int = 1000, offset: int = 0) -> list[TempKeyRecord]:
        rows = self.db.execute(_KEYS_PAGE, (limit, offset))
        return [_key(r) for r in rows]

    def key_pin(self, key_id: str) -> str:
        row = self.db.execute("SELECT pin_sealed FROM temp_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no temp key {key_id!r}")
        return self._key.unseal(row[0], key_id)

    def remove_key(self, key_id: str) -> None:
        """Delete a key; a signed text of the same id is revoked with it, until the key's end (it would
        otherwise open again on its own terms)."""
        with self.transaction():
            row = self.db.execute("SELECT valid_until FROM temp_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no temp key {key_id!r}")
            self.db.execute("DELETE FROM temp_keys WHERE id = ?", (key_id,))
            until = int(datetime.fromisoformat(row[0]).timestamp())
            self.db.execute("INSERT INTO revoked_keys (key_id, until, revoked, source) VALUES (?, ?, ?, 'removed')"
                            " ON CONFLICT (key_id) DO UPDATE SET until = max(until, excluded.until)",
                            (key_id, until, datetime.now().astimezone().isoformat()))

    # ------------------------------------------------------------ offline-signed keys
    def revoke(self, key_id: str, until: int, source: str, now: datetime) -> bool:
        """Refuse signed texts of ``key_id`` until ``until`` (its valid_until, Unix seconds); True when new.

        Past ``until`` the revocation is pruned (the key is expired anyway). A revocation is never dropped to
        make room: past :data:`MAX_REVOCATIONS` a new one is refused (CredentialError), loudly."""
        with self.transaction():
            new = self.db.execute("SELECT 1 FROM revoked_keys WHERE key_id = ?", (key_id,)).fetchone() is None
            if new:
                if until <= now.timestamp():
                    return False  # the key has ended: nothing to refuse
                held = self.db.execute("SELECT count(*) FROM revoked_keys").fetchone()[0]
                if held >= MAX_REVOCATIONS:
                    raise CredentialError(f"the revocation list is full ({MAX_REVOCATIONS} keys not yet expired)")
            self.db.execute(
                "INSERT INTO revoked_keys (key_id, until, revoked, source) VALUES (?, ?, ?, ?) ON CONFLICT (key_id)"
                " DO UPDATE SET until = max(until, excluded.until)", (key_id, until, now.isoformat(), source))
            return new

    def is_revoked(self, key_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM revoked_keys WHERE key_id = ?", (key_id,)).fetchone() is not None

    def revocation(self, key_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT until, revoked, source FROM revoked_keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else {"until": int(row[0]), "revoked": row[1], "source": row[2]}

    def revocation_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM revoked_keys").fetchone()[0])

    def prune_signed(self, now: datetime) -> tuple[int, int]:
        """Drop revocations and use counts of signed keys past their end: (revocations, use rows) dropped."""
        stamp = int(now.timestamp())
        with self.transaction():
            revoked = self.db.execute("DELETE FROM revoked_keys WHERE until < ?", (stamp,)).rowcount
            uses = self.db.execute("DELETE FROM signed_key_uses WHERE until < ?", (stamp,)).rowcount
        return revoked, uses

    def signed_key_uses(self, key_id: str, door: int) -> int:
        row = self.db.execute("SELECT uses FROM signed_key_uses WHERE key_id = ? AND door = ?",
                              (key_id, door)).fetchone()
        return int(row[0]) if row else 0

    def all_signed_key_uses(self, key_id: str) -> dict[int, int]:
        return {int(d): int(u) for d, u in self.db.execute("SELECT door, uses FROM signed_key_uses WHERE key_id = ?",
                                                           (key_id,))}

    def signing_keys(self) -> list[tuple[str, str]]:
        """Cloud public keys the sync delivered: (fingerprint hex, PEM)."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT fingerprint, pem FROM cloud_signing_keys"
                                                       " ORDER BY fingerprint")]

    def replace_signing_keys(self, keys: dict[str, str], now: datetime) -> None:
        """The sync's cloud public keys become exactly ``keys`` (fingerprint hex -> PEM)."""
        with self.transaction():
            self.db.execute("DELETE FROM cloud_signing_keys")
            self.db.executemany("INSERT INTO cloud_signing_keys (fingerprint, pem, added) VALUES (?, ?, ?)",
                                [(f, pem, now.isoformat()) for f, pem in sorted(keys.items())])
        self.signing_generation += 1

    def expire_key(self, key_id: str) -> None:
        """End a key's validity now-or-earlier without deleting it (its use counts stay)."""
        with self.transaction():
            self.db.execute("UPDATE temp_keys SET valid_until = valid_from WHERE id = ?", (key_id,))

    def key_uses(self, key_id: str, door: int) -> int:
        row = self.db.execute("SELECT uses FROM key_uses WHERE key_id = ? AND door = ?", (key_id, door)).fetchone()
        return int(row[0]) if row else 0

    def all_key_uses(self, key_id: str) -> dict[int, int]:
        return {int(d): int(u) for d, u in self.db.execute("SELECT door, uses FROM key_uses WHERE key_id = ?",
                                                           (key_id,))}

    # ------------------------------------------------------------ lookups for decisions
    def user_by_pin(self, pin: str) -> UserRecord | None:
        row = self.db.execute(
            "SELECT u.id, u.name, u.department, u.enabled, u.doors, u.windows FROM pins p JOIN users u"
            " ON u.id = p.user_id WHERE p.hash = ?", (self.hash(pin),)).fetchone()
        return _user(row) if row else None

    def key_by_pin(self, pin: str) -> TempKeyRecord | None:
        row = self.db.execute(_KEY_BY_PIN, (self.hash(pin),)).fetchone()
        return _key(row) if row else None

    def user_by_card(self, uid: str) -> UserRecord | None:
        row = self.db.execute(
            "SELECT u.id, u.name, u.department, u.enabled, u.doors, u.windows FROM cards c JOIN users u"
            " ON u.id = c.user_id WHERE c.uid = ?", (uid,)).fetchone()
        return _user(row) if row else None

    # ------------------------------------------------------------ recording decisions
    def record_access(self, entry: DoorLogEntry, consume: tuple[str, int, int] | None = None,
                      then: Callable[[Recorded], None] | None = None,
                      lockout: tuple[str, LockoutState] | None = None, signed_until: int | None = None,
                      counter: tuple[bytes, int] | None = None) -> int | None:
        """Write the decision in one transaction: the entry; with ``consume`` (key id, door, limit) one use,
        taken only while ``uses < limit``; with ``lockout`` (source, new state) the keypad's lock-out.

        ``then(recorded)`` runs inside the same transaction (the gate stores the decision's events in the
        outbox there), so the entry, the use, the lock-out and the events are committed together or not at
        all; with ``signed_until`` (an offline-signed key's end, Unix seconds) the use is counted in
        ``signed_key_uses`` (a signed key has no temp_keys row); ``recorded.folded`` says the refusal was
        folded into an earlier entry (``Store.collapse_refusal``), ``recorded.uses`` is the key's count after
        the use was taken.
        With ``counter`` (public point, counter) a granted BLE token's counter becomes the key's high-water mark
        in the same transaction: fsynced before the door moves, so a restart (or ``kill -9``) never reopens it.
        Returns the log id, or None when the use could not be taken (the limit was reached
        meanwhile): then nothing was written and the caller must refuse.
        """
        try:
            with self.transaction():
                uses = None if consume is None else self._take_use(*consume) if signed_until is None \
                    else self._take_signed_use(*consume, signed_until)
                if lockout is not None:
                    self.save_lockout(*lockout)  # joins this transaction
                if counter is not None:
                    self._keep_counter(*counter)
                collapsed = self._store.collapse_refusal(entry)
                log_id = collapsed if collapsed is not None else self._store.append_door_log(entry)
                if then is not None:
                    then(Recorded(log_id, collapsed is not None, uses))
                return log_id
        except _NoUseLeftError:
            return None

    def _take_use(self, key_id: str, door: int, limit: int) -> int:
        """One use of a repeat-never key on ``door``, guarded in SQL; the count after it."""
        row = self.db.execute(
            "INSERT INTO key_uses (key_id, door, uses) VALUES (?, ?, 1) ON CONFLICT (key_id, door)"
            " DO UPDATE SET uses = uses + 1 WHERE uses < ? RETURNING uses", (key_id, door, limit)).fetchone()
        if row is None:
            raise _NoUseLeftError
        return int(row[0])

    def _take_signed_use(self, key_id: str, door: int, limit: int, until: int) -> int:
        """One use of a signed repeat-never key on ``door``, guarded in SQL exactly like :meth:`_take_use`."""
        row = self.db.execute(
            "INSERT INTO signed_key_uses (key_id, door, uses, until) VALUES (?, ?, 1, ?) ON CONFLICT (key_id, door)"
            " DO UPDATE SET uses = uses + 1 WHERE uses < ? RETURNING uses", (key_id, door, until, limit)).fetchone()
        if row is None:
            raise _NoUseLeftError
        return int(row[0])

    def record_lock_fault(self, log_id: int, reason: str, detail: str, refund: tuple[str, int] | None,
                          signed: bool = False) -> None:
        """A granted open whose lock did not move: the access entry becomes a ``lock_fault`` refusal
        (granted false, the lock's reason and detail kept), and with ``refund`` (key id, door) the use the
        grant took is given back, in one transaction: the door log never shows an open that did not happen,
        and a key is charged only for opens that may have happened."""
        with self.transaction():
            row = self.db.execute("SELECT detail FROM door_log WHERE id = ?", (log_id,)).fetchone()
            if row is None:
                return
            info = {**json.loads(row[0]), "lock_fault": reason, "lock_detail": detail, "use_refunded": bool(refund)}
            self.db.execute("UPDATE door_log SET granted = 0, reason = 'lock_fault', detail = ? WHERE id = ?",
                            (json.dumps(info, separators=(",", ":")), log_id))
            if refund is not None:
                table = "signed_key_uses" if signed else "key_uses"
                self.db.execute(f"UPDATE {table} SET uses = uses - 1 WHERE key_id = ? AND door = ? AND uses > 0",  # noqa: S608
                                refund)

    # ------------------------------------------------------------ lockouts
    def lockout(self, source: str) -> LockoutState:
        row = self.db.execute("SELECT state FROM lockouts WHERE source = ?", (source,)).fetchone()
        return LockoutState.from_dict(json.loads(row[0])) if row else LockoutState()

    def lockouts(self) -> dict[str, LockoutState]:
        return {source: LockoutState.from_dict(json.loads(state))
                for source, state in self.db.execute("SELECT source, state FROM lockouts")}

    def save_lockout(self, source: str, state: LockoutState) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO lockouts (source, state) VALUES (?, ?) ON CONFLICT (source)"
                            " DO UPDATE SET state = excluded.state", (source, json.dumps(state.as_dict())))

    def counts(self) -> dict[str, int]:
        query = ("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM temp_keys), (SELECT count(*) FROM cards),"
                 " (SELECT count(*) FROM pins WHERE user_id IS NOT NULL), (SELECT count(*) FROM phone_keys)")
        users, keys, cards, pins, phones = self.db.execute(query).fetchone()
        return {"users": users, "temp_keys": keys, "cards": cards, "private_pins": pins, "phone_keys": phones}

    # ------------------------------------------------------------ phone keys
    def add_phone_key(self, key: PhoneKeyRecord, now: datetime) -> None:
        """Enrol one phone of a user; the id, the key and its tag must be new on the unit."""
        with self.transaction():
            self._insert_phone_key(key, now)

    def _insert_phone_key(self, key: PhoneKeyRecord, now: datetime) -> None:
        if self.get_user(key.user_id) is None:
            raise NotFoundError(f"no user {key.user_id!r}")
        clash = self.db.execute("SELECT id FROM phone_keys WHERE id = ? OR public_point = ? OR tag = ?",
                                (key.id, key.public_point, key.tag)).fetchone()
        if clash is not None:
            what = "id" if clash[0] == key.id else "public key"
            raise CredentialError(f"a phone key with this {what} is already enrolled ({clash[0]})")
        self.db.execute(
            "INSERT INTO phone_keys (id, user_id, public_point, tag, modes, expires, source, added)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key.id, key.user_id, key.public_point, key.tag, json.dumps(sorted(key.modes)),
             key.expires.isoformat() if key.expires else None, key.source, now.isoformat()))

    def replace_phone_keys(self, user_id: str, keys: list[PhoneKeyRecord], now: datetime) -> None:
        """A sync's word on a user's phones: exactly these (joins the caller's transaction)."""
        with self.transaction():
            self.db.execute("DELETE FROM phone_keys WHERE user_id = ?", (user_id,))
            for key in keys:
                self._insert_phone_key(key, now)

    def remove_phone_key(self, key_id: str) -> None:
        with self.transaction():
            if self.db.execute("DELETE FROM phone_keys WHERE id = ?", (key_id,)).rowcount == 0:
                raise NotFoundError(f"no phone key {key_id!r}")

    def phone_key(self, key_id: str) -> PhoneKeyRecord | None:
        row = self.db.execute(_PHONE + " WHERE id = ?", (key_id,)).fetchone()
        return _phone(row) if row else None

    def phone_key_by_tag(self, tag: bytes) -> PhoneKeyRecord | None:
        row = self.db.execute(_PHONE + " WHERE tag = ?", (tag,)).fetchone()
        return _phone(row) if row else None

    def phone_keys(self, user_id: str | None = None) -> list[PhoneKeyRecord]:
        if user_id is None:
            return [_phone(r) for r in self.db.execute(_PHONE + " ORDER BY user_id, id")]
        return [_phone(r) for r in self.db.execute(_PHONE + " WHERE user_id = ? ORDER BY id", (user_id,))]

    def ble_counter(self, public_point: bytes) -> int:
        row = self.db.execute("SELECT counter FROM phone_counters WHERE public_point = ?", (public_point,)).fetchone()
        return -1 if row is None else int(row[0])

    def _keep_counter(self, public_point: bytes, counter: int) -> None:
        self.db.execute("INSERT INTO phone_counters (public_point, counter) VALUES (?, ?) ON CONFLICT (public_point)"
                        " DO UPDATE SET counter = max(counter, excluded.counter)", (public_point, counter))


_KEY_BY_ID = ("SELECT id, name, doors, repeat, valid_from, valid_until, window, each_door_counts, recipients"
              " FROM temp_keys WHERE id = ?")
_KEYS_PAGE = ("SELECT id, name, doors, repeat, valid_from, valid_until, window, each_door_counts, recipients"
              " FROM temp_keys ORDER BY created, id LIMIT ? OFFSET ?")
_KEY_BY_PIN = ("SELECT k.id, k.name, k.doors, k.repeat, k.valid_from, k.valid_until, k.window, k.each_door_counts,"
               " k.recipients FROM pins p JOIN temp_keys k ON k.id = p.key_id WHERE p.hash = ?")


_PHONE = "SELECT id, user_id, public_point, modes, expires, source FROM phone_keys"


def _phone(row: tuple[Any, ...]) -> PhoneKeyRecord:
    return PhoneKeyRecord(id=row[0], user_id=row[1], public_point=bytes(row[2]), modes=frozenset(json.loads(row[3])),
                          expires=datetime.fromisoformat(row[4]) if row[4] else None, source=row[5])


def _windows_json(windows: tuple[WeeklyWindow, ...]) -> str:
    return json.dumps([w.as_dict() for w in windows])


def _doors_json(doors: frozenset[int] | None) -> str | None:
    return None if doors is None else json.dumps(sorted(doors))


def _user(row: tuple[Any, ...]) -> UserRecord:
    doors = None if row[4] is None else frozenset(json.loads(row[4]))
    windows = tuple(WeeklyWindow.from_dict(w) for w in json.loads(row[5]))
    return UserRecord(id=row[0], name=row[1], department=row[2], enabled=bool(row[3]), doors=doors, windows=windows)


def _key(row: tuple[Any, ...]) -> TempKeyRecord:
    return TempKeyRecord(
        id=row[0], name=row[1], doors=frozenset(json.loads(row[2])), repeat=row[3],
        start=datetime.fromisoformat(row[4]), end=datetime.fromisoformat(row[5]),
        window=WeeklyWindow.from_dict(json.loads(row[6])) if row[6] else None, each_door_counts=row[7],
        recipients=tuple(json.loads(row[8])))
