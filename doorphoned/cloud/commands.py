"""Cloud commands (``cmd/<name>``): one table of name -> handler, every request answered.

The command envelope owns ``id`` (the command's id) and ``ts``; a user or a temp key is named by
``user_id`` / ``key_id`` in the arguments.

Arguments arrive from the network and are untrusted; each handler validates them with the same
helpers as the control socket and raises :class:`CommandError` with a reason the cloud can show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doorphoned import __version__
from doorphoned.access.commands import key_json
from doorphoned.access.credstore import CredentialError, NotFoundError
from doorphoned.access.sync import (
    DELTA_KEYS,
    KEY_FIELDS,
    SNAPSHOT_KEYS,
    USER_FIELDS,
    CredentialSync,
    ItemParser,
    cloud_may_change,
)
from doorphoned.core import logsetup
from doorphoned.core.commands import CommandError, arg_int, arg_opt_text, arg_text
from doorphoned.core.config import ConfigError
from doorphoned.core.presentations import REMOTE_SOURCES, RemoteOpen
from doorphoned.core.settings import OverrideError, merge, set_settings
from doorphoned.core.strictjson import Command

if TYPE_CHECKING:
    from doorphoned.app.daemon import Daemon


class CloudCommands:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        gate = daemon.gate
        self.sync = CredentialSync(daemon.creds, daemon.clock, self._parser, DaemonSettings(daemon),
                                   daemon.bus.publish, gate.quiet if gate is not None else None)

    def table(self) -> dict[str, Command]:
        """Every command with the argument fields it declares: any other field is refused before it runs."""
        none: frozenset[str] = frozenset()
        return {
            "open_door": Command(self.open_door, frozenset({"door", "source", "user"})),
            "status": Command(self.status, none),
            "log.level": Command(self.log_level, frozenset({"level"})),
            "user.upsert": Command(self.user_upsert, frozenset(USER_FIELDS)),
            "user.remove": Command(self.user_remove, frozenset({"user_id"})),
            "tempkey.add": Command(self.tempkey_add, frozenset(KEY_FIELDS)),
            "tempkey.remove": Command(self.tempkey_remove, frozenset({"key_id"})),
            "restart": Command(self.restart, none),
            "sync.snapshot": Command(self.sync.snapshot, frozenset(SNAPSHOT_KEYS)),
            "sync.delta": Command(self.sync.delta, frozenset(DELTA_KEYS)),
            "config.set": Command(self.config_set, frozenset({"settings"})),
        }

    def _cloud_owned(self, table: str, item_id: str) -> None:
        """The installer's own users and keys are out of the cloud's reach (DESIGN §7, sync)."""
        try:
            cloud_may_change(self.d.creds, table, item_id)
        except CredentialError as exc:
            raise CommandError(str(exc)) from exc

    def _parser(self) -> ItemParser:
        return ItemParser(frozenset(d.id for d in self.d.config.doors), self.d.tz)

    async def config_set(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"settings": {"doors.1.hold_time": 5, "site.name": null}}``; null returns a key to the file's value."""
        return await set_settings(self.d, args.get("settings"))

    async def open_door(self, args: dict[str, Any]) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16, None)
        source = args.get("source", "portal")
        if source not in REMOTE_SOURCES:
            raise CommandError(f"source must be one of {', '.join(REMOTE_SOURCES)}")
        user = arg_opt_text(args, "user")
        assert self.d.gate is not None
        result = await self.d.gate.request(RemoteOpen(source, user), door)
        if not result.decision.granted:
            raise CommandError(f"refused: {result.decision.reason.value}")
        if not result.opened:
            raise CommandError(f"not opened: {result.error}")
        return {"door": door, "opened": True}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        doors = self.d.doors
        return {"version": __version__, "site": self.d.config.site.name,
                "doors": [d.describe() for d in doors.doors.values()] if doors else [],
                "features": self.d.supervisor.report(), "credentials": self.d.creds.counts()}

    async def log_level(self, args: dict[str, Any]) -> dict[str, Any]:
        logsetup.set_level(arg_int(args, "level", 1, 7, None))
        return {"level": logsetup.current_level()}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        """Exit with status 75 after the reply is out; systemd (Restart=on-failure) starts us again."""
        self.d.request_stop(exit_code=75, delay=0.5)
        return {"restarting": True}

    # ------------------------------------------------------------ users
    async def user_upsert(self, args: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a user; ``pin`` and ``cards``, when present, replace the user's own."""
        item = self._parser().user(args)
        if item.schedule_id is not None:
            raise CommandError("named schedules (schedule_id) arrive with sync.snapshot / sync.delta")
        user, creds, now = item.user, self.d.creds, self.d.clock.now()
        self._cloud_owned("users", user.id)
        try:
            with creds.transaction():  # all or nothing: a colliding PIN leaves the old user as it was
                creds.put_user(user, now, "cloud")
                if item.pin is not None:
                    creds.set_pin(user.id, item.pin)
                if item.cards is not None:
                    creds.replace_cards(user.id, list(item.cards), now)
        except (CredentialError, NotFoundError) as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        return {"user_id": user.id, **creds.user_facts(user.id)}

    async def user_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = arg_text(args, "user_id")
        self._cloud_owned("users", user_id)
        try:
            self.d.creds.remove_user(user_id)
        except NotFoundError as exc:
            raise CommandError(f"no user {user_id!r}") from exc
        return {"removed": user_id}

    # ------------------------------------------------------------ temp keys
    async def tempkey_add(self, args: dict[str, Any]) -> dict[str, Any]:
        item = self._parser().key(args)
        try:
            self.d.creds.add_temp_key(item.key, item.pin, self.d.clock.now(), created_by="cloud", source="cloud")
        except CredentialError as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        return key_json(item.key)

    async def tempkey_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        key_id = arg_text(args, "key_id", limit=40)
        self._cloud_owned("temp_keys", key_id)
        try:
            self.d.creds.remove_key(key_id)
        except NotFoundError as exc:
            raise CommandError(f"no temp key {key_id!r}") from exc
        return {"removed": key_id}


class DaemonSettings:
    """The sync's door settings go through the daemon's run-time settings."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def check(self, changes: dict[str, Any], replace_prefix: str) -> None:
        try:
            self.d.loader.load(merge(self.d.overrides, changes, replace_prefix))
        except (OverrideError, ConfigError) as exc:
            raise CommandError(f"doors: {exc}") from exc

    async def apply(self, changes: dict[str, Any], replace_prefix: str) -> Any:
        return await set_settings(self.d, changes, replace_prefix)
