"""The monitor stream's commands: the cloud's ``monitor.start`` / ``monitor.stop``, the socket's ``monitor.status``.

``monitor.start`` hands the app a one-time URL for one session (default cap ``[monitor] session_cap``),
``monitor.stop`` revokes it and ends the session using it (by its ``session``: ``id`` is the command
envelope's). The URL embeds its credential: it is the
reply's payload and goes nowhere else (never into a log line). The installer's password is never in any
reply: ``monitor.status`` shows viewers with their quality and the encoder's rates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from doorphoned.camera.monitor_link import MonitorError, MonitorLink
from doorphoned.core.commands import Caller, Command, CommandError, arg_int, arg_text

GRANT_ID_MAX = 64


class MonitorCommands:
    """Handlers over the running stream (``link()`` is None when ``[monitor]`` is off or no camera runs)."""

    def __init__(self, link: Callable[[], MonitorLink | None], max_cap: Callable[[], int]) -> None:
        self._link = link
        self._max_cap = max_cap

    def commands(self) -> list[Command]:
        return [
            Command(None, "monitor.start", self.start, frozenset({"cap"}),
                    "a one-time URL to the live stream for one session"),
            Command(None, "monitor.stop", self.stop, frozenset({"session"}),
                    "revoke a monitor URL, ending its session"),
            Command("monitor.status", None, self.status, frozenset(), "monitor viewers, quality, encoder"),
        ]

    def _running(self) -> MonitorLink:
        link = self._link()
        if link is None:
            raise CommandError("the monitor stream is not enabled ([monitor] enabled = false or no camera)")
        return link

    async def start(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        link = self._running()
        cap = arg_int(args, "cap", 5, self._max_cap()) if args.get("cap") is not None else None
        try:
            grant = await link.issue("cloud", cap)
        except MonitorError as exc:
            raise CommandError(f"monitor not started: {exc}") from None
        return {"session": grant.id, "url": grant.url, "expires": grant.expires, "cap_seconds": grant.cap_seconds}

    async def stop(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        grant_id = arg_text(args, "session", limit=GRANT_ID_MAX)
        try:
            revoked = await self._running().revoke(grant_id)
        except MonitorError as exc:
            raise CommandError(f"monitor not stopped: {exc}") from None
        if not revoked:
            raise CommandError("no live monitor session with that id (ended, expired or never issued)")
        return {"session": grant_id, "revoked": True}

    async def status(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        link = self._running()
        summary = link.summary()
        if link.state != "ok":
            return {**summary, "viewers": [], "encoder": {}, "pipeline": {}}
        try:
            detail = await link.viewers()
        except MonitorError as exc:
            raise CommandError(f"monitor status: {exc}") from None
        return {**summary, **detail}
