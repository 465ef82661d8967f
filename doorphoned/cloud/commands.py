"""Cloud commands (``cmd/<name>``): one table of name -> handler, every request answered.

The command envelope owns ``id`` (the command's id) and ``ts``; a user or a temp key is named by
``user_id`` / ``key_id`` in the arguments.

Arguments arrive from the network and are untrusted; each handler validates them with the same
helpers as the control socket and raises :class:`CommandError` with a reason the cloud can show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from doorphoned import __version__, logsetup
from doorphoned.access import REMOTE_SOURCES, RemoteOpen, Repeat, TempKeyRecord
from doorphoned.control.credcommands import (
    REPEATS,
    _doors,
    _int,
    _key_window,
    _opt_str,
    _str_list,
    _text,
    key_json,
    user_from_args,
)
from doorphoned.control.server import CommandError
from doorphoned.credentials import (
    CredentialFormatError,
    check_key_id,
    check_private_pin,
    check_temp_pin,
    check_user_id,
    normalise_card_uid,
)
from doorphoned.credstore import MAX_CARDS_PER_USER, CredentialError, NotFoundError
from doorphoned.schedule import ScheduleError, parse_local_datetime

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from doorphoned.daemon import Daemon

class CloudCommands:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def table(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {
            "open_door": self.open_door, "status": self.status, "log.level": self.log_level,
            "user.upsert": self.user_upsert, "user.remove": self.user_remove,
            "tempkey.add": self.tempkey_add, "tempkey.remove": self.tempkey_remove, "restart": self.restart,
        }

    async def open_door(self, args: dict[str, Any]) -> dict[str, Any]:
        door = _int(args, "door", 1, 16, None)
        source = args.get("source", "portal")
        if source not in REMOTE_SOURCES:
            raise CommandError(f"source must be one of {', '.join(REMOTE_SOURCES)}")
        user = _opt_str(args, "user")
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
        logsetup.set_level(_int(args, "level", 1, 7, None))
        return {"level": logsetup.current_level()}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        """Exit with status 75 after the reply is out; systemd (Restart=on-failure) starts us again."""
        self.d.request_stop(exit_code=75, delay=0.5)
        return {"restarting": True}

    # ------------------------------------------------------------ users
    async def user_upsert(self, args: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a user; ``pin`` and ``cards``, when present, replace the user's own."""
        try:
            user_id = check_user_id(_text(args, "user_id"))
            pin = _opt_str(args, "pin", limit=8)
            if pin is not None:
                check_private_pin(pin)
            cards = [normalise_card_uid(c) for c in _str_list(args, "cards")] if "cards" in args else None
        except CredentialFormatError as exc:
            raise CommandError(str(exc)) from exc
        if cards is not None and len(cards) > MAX_CARDS_PER_USER:
            raise CommandError(f"at most {MAX_CARDS_PER_USER} cards per user")
        user = user_from_args(user_id, args, self._known_doors())
        creds, now = self.d.creds, self.d.clock.now()
        try:
            with creds.transaction():  # all or nothing: a colliding PIN leaves the old user as it was
                if creds.get_user(user_id) is None:
                    creds.add_user(user, now)
                else:
                    creds.update_user(user, now)
                if pin is not None:
                    creds.set_pin(user_id, pin)
                if cards is not None:
                    creds.replace_cards(user_id, cards, now)
        except (CredentialError, NotFoundError) as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        return {"user_id": user_id, **creds.user_facts(user_id)}

    async def user_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = _text(args, "user_id")
        try:
            self.d.creds.remove_user(user_id)
        except NotFoundError as exc:
            raise CommandError(f"no user {user_id!r}") from exc
        return {"removed": user_id}

    # ------------------------------------------------------------ temp keys
    async def tempkey_add(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            key_id = check_key_id(_text(args, "key_id", limit=40))
            pin = check_temp_pin(_text(args, "pin", limit=8))
        except CredentialFormatError as exc:
            raise CommandError(str(exc)) from exc
        key = self._key(key_id, args)
        try:
            self.d.creds.add_temp_key(key, pin, self.d.clock.now(), created_by="cloud")
        except CredentialError as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        return key_json(key)

    def _key(self, key_id: str, args: dict[str, Any]) -> TempKeyRecord:
        repeat = _opt_str(args, "repeat") or "never"
        if repeat not in REPEATS:
            raise CommandError("repeat must be never, daily or weekly")
        start_text, end_text = _opt_str(args, "start"), _opt_str(args, "end")
        if not start_text or not end_text:
            raise CommandError("start and end are required (ISO 8601)")
        try:
            start, end = parse_local_datetime(start_text, self.d.tz), parse_local_datetime(end_text, self.d.tz)
            window = _key_window(repeat, _opt_str(args, "from"), _opt_str(args, "to"), _opt_str(args, "days"))
        except ScheduleError as exc:
            raise CommandError(str(exc)) from exc
        if end <= start:
            raise CommandError("end must be after start")
        count = _int(args, "count", 1, 100, 1) if repeat == "never" else None
        if repeat != "never" and args.get("count") is not None:
            raise CommandError("only repeat=never keys have a use count")
        doors = _doors(args, "doors", self._known_doors(), allow_all=False)
        assert doors is not None
        return TempKeyRecord(key_id, _text(args, "name"), doors, cast(Repeat, repeat), start, end, window, count)

    async def tempkey_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        key_id = _text(args, "key_id", limit=40)
        try:
            self.d.creds.remove_key(key_id)
        except NotFoundError as exc:
            raise CommandError(f"no temp key {key_id!r}") from exc
        return {"removed": key_id}

    def _known_doors(self) -> frozenset[int]:
        return frozenset(d.id for d in self.d.config.doors)
