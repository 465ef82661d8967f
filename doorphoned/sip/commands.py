"""The control socket's call commands: ``call``, ``hangup`` and ``log.calls``.

They live with the SIP feature they drive; the daemon hands them a way to find that feature (it may be
off, or its SIP process between restarts) and the store that keeps the call history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from doorphoned.core.commands import Caller, Command, CommandError, arg_int, installer
from doorphoned.core.store import Store
from doorphoned.sip.backend import SipError
from doorphoned.sip.calllog import CallLog

CALL_KINDS = ("outgoing", "incoming", "missed", "forwarded")


class CallCommands:
    def __init__(self, sip: Callable[[], Any], store: Store) -> None:
        self._find_sip = sip
        self._store = store

    def commands(self) -> list[Command]:
        return [Command("call", None, self.call, frozenset({"target"}), "call a target from the door"),
                Command("hangup", None, self.hangup, frozenset(), "end the call in progress"),
                Command("log.calls", None, self.log_calls, frozenset({"limit", "type"}), "the call history")]

    def _sip(self) -> Any:
        sip = self._find_sip()
        if sip is None:
            raise CommandError("SIP is off (set sip.enabled = true)")
        if sip.backend is None:
            raise CommandError("the SIP stack is not running (see `doorphonectl status`)")
        return sip

    async def call(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        target = args.get("target")
        if not isinstance(target, str) or not 0 < len(target) <= 200:
            raise CommandError("target must be a call target id or name, or a sip: URI")
        try:
            result: dict[str, Any] = await self._sip().call(target, f"uid {installer(caller).uid}")
        except SipError as exc:
            raise CommandError(str(exc)) from None
        return result

    async def hangup(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        result: dict[str, Any] = await self._sip().hangup()
        return result

    async def log_calls(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        limit = arg_int(args, "limit", 1, 100_000, 50)
        kind = args.get("type")
        if kind is not None and kind not in CALL_KINDS:
            raise CommandError("type must be outgoing, incoming, missed or forwarded")
        return [r.as_dict() for r in CallLog(self._store).recent(limit, kind)]
