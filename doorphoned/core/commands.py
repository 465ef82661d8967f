"""What every command handler shares, whichever way its request arrived (control socket or MQTT).

Features declare their commands in their own folders; the control socket and the cloud link route to
them. The error type and the caller's identity live here, in the core, so that a feature's commands
never import the socket server or the cloud link to report a refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


class CommandError(Exception):
    """A request that cannot be carried out; the message goes back as the one-line reason."""


@dataclass(frozen=True)
class Peer:
    """Who asked over the control socket (its SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


Handler = Callable[[dict[str, Any], Peer], Awaitable[Any]]
