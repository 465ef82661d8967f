"""The cloud's credential commands: ``user.upsert``, ``user.remove``, ``tempkey.add``, ``tempkey.remove``,
``sync.snapshot`` and ``sync.delta`` (MQTT only; the socket has its own ``user.add`` and friends).

They are credentials, not MQTT: they live with the store and the sync rules they drive, and the cloud link
only routes to them through the command registry. The command envelope owns ``id`` and ``ts``; a user or a
temp key is named by ``user_id`` / ``key_id`` in the arguments. Arguments arrive from the network and are
untrusted; every refusal is a :class:`CommandError` with a reason the cloud can show.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from doorphoned.access.commands import key_json
from doorphoned.access.credstore import CredentialError, CredentialStore, NotFoundError
from doorphoned.access.sync import (
    DELTA_KEYS,
    KEY_FIELDS,
    REVOCATION_FIELDS,
    SNAPSHOT_KEYS,
    USER_FIELDS,
    CredentialSync,
    ItemParser,
    Settings,
    cloud_may_change,
)
from doorphoned.core.clock import Clock
from doorphoned.core.commands import Caller, Command, CommandError, arg_text
from doorphoned.core.events import Event
from doorphoned.core.faces import FaceTemplates


class CloudCredentialCommands:
    def __init__(self, creds: CredentialStore, clock: Clock, known_doors: Callable[[], frozenset[int]],
                 tz: Callable[[], ZoneInfo], settings: Settings, publish: Callable[[Event], None],
                 quiet: Callable[[], Awaitable[None]] | None, faces: FaceTemplates | None = None) -> None:
        self._creds = creds
        self._clock = clock
        self._known = known_doors
        self._tz = tz
        self.sync = CredentialSync(creds, clock, self._parser, settings, publish, quiet, faces)

    def commands(self) -> list[Command]:
        async def snapshot(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
            return await self.sync.snapshot(args)

        async def delta(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
            return await self.sync.delta(args)

        return [
            Command(None, "user.upsert", self.user_upsert, frozenset(USER_FIELDS), "create or replace a user"),
            Command(None, "user.remove", self.user_remove, frozenset({"user_id"}), "remove a cloud user"),
            Command(None, "tempkey.add", self.tempkey_add, frozenset(KEY_FIELDS), "add a temp key"),
            Command(None, "tempkey.remove", self.tempkey_remove, frozenset({"key_id"}), "remove a cloud temp key"),
            Command(None, "tempkey.revoke", self.tempkey_revoke, frozenset(REVOCATION_FIELDS),
                    "refuse an offline-signed temp key from now on (until its end)"),
            Command(None, "sync.snapshot", snapshot, frozenset(SNAPSHOT_KEYS), "one part of a full snapshot"),
            Command(None, "sync.delta", delta, frozenset(DELTA_KEYS), "the changes since a version"),
        ]

    def _cloud_owned(self, table: str, item_id: str) -> None:
        """The installer's own users and keys are out of the cloud's reach (DESIGN §7, sync)."""
        try:
            cloud_may_change(self._creds, table, item_id)
        except CredentialError as exc:
            raise CommandError(str(exc)) from exc

    def _parser(self) -> ItemParser:
        return ItemParser(self._known(), self._tz())

    async def user_upsert(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Create or replace a user; ``pin``, ``cards`` and ``phone_keys``, when present, replace the user's own."""
        item = self._parser().user(args)
        if item.schedule_id is not None:
            raise CommandError("named schedules (schedule_id) arrive with sync.snapshot / sync.delta")
        user, creds, now = item.user, self._creds, self._clock.now()
        self._cloud_owned("users", user.id)
        try:
            with creds.transaction():  # all or nothing: a colliding PIN leaves the old user as it was
                creds.put_user(user, now, "cloud")
                if item.pin is not None:
                    creds.set_pin(user.id, item.pin)
                if item.cards is not None:
                    creds.replace_cards(user.id, list(item.cards), now)
                if item.phones is not None:
                    creds.replace_phone_keys(user.id, list(item.phones), now)
        except (CredentialError, NotFoundError) as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        return {"user_id": user.id, **creds.user_facts(user.id)}

    async def user_remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user_id = arg_text(args, "user_id")
        self._cloud_owned("users", user_id)
        try:
            self._creds.remove_user(user_id)
        except NotFoundError as exc:
            raise CommandError(f"no user {user_id!r}") from exc
        return {"removed": user_id}

    async def tempkey_add(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        item = self._parser().key(args)
        try:
            self._creds.add_temp_key(item.key, item.pin, self._clock.now(), created_by="cloud", source="cloud")
        except CredentialError as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        return key_json(item.key)

    async def tempkey_revoke(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Revoke a signed key by id (its end bounds how long the unit keeps the revocation). Kept at once,
        outside the sync's versions: a revocation must not wait for the next delta."""
        item = self._parser().revocation(args)
        now = self._clock.now()
        try:
            self._creds.prune_signed(now)
            added = self._creds.revoke(item.key_id, item.until, "command", now)
        except CredentialError as exc:
            raise CommandError(str(exc)) from exc
        return {"revoked": item.key_id, "new": added, "until": item.until,
                "revocations": self._creds.revocation_count()}

    async def tempkey_remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        key_id = arg_text(args, "key_id", limit=40)
        self._cloud_owned("temp_keys", key_id)
        try:
            self._creds.remove_key(key_id)
        except NotFoundError as exc:
            raise CommandError(f"no temp key {key_id!r}") from exc
        return {"removed": key_id}
