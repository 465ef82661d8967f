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


# ---------------------------------------------------------------- typed argument readers
# Every command of every feature reads its untrusted arguments with these, whether they came over the
# control socket or MQTT, so a refusal reads the same both ways.

TEXT_MAX = 64


def arg_int(args: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CommandError(f"{name} must be a whole number from {low} to {high}")
    return value


def arg_text(args: dict[str, Any], name: str, required: bool = True, limit: int = TEXT_MAX) -> str:
    """Printable text of 1..limit characters, stripped; ``""`` when optional and absent."""
    value = args.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise CommandError(f"{name} must be printable text of 1-{limit} characters")
    return value.strip()


def arg_opt_text(args: dict[str, Any], name: str, limit: int = TEXT_MAX) -> str | None:
    """An optional text argument: absent/None, or a string of at most ``limit`` characters."""
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise CommandError(f"{name} must be text of at most {limit} characters")
    return value


def arg_text_list(args: dict[str, Any], name: str) -> list[str]:
    value = args.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) < TEXT_MAX for v in value):
        raise CommandError(f"{name} must be a list of texts like 'mon-fri 08:00-18:00'")
    return value


def arg_doors(args: dict[str, Any], name: str, known: frozenset[int], allow_all: bool) -> frozenset[int] | None:
    """A list of this unit's door numbers (``None`` for "all" where that is allowed)."""
    value = args.get(name)
    if value in (None, "all") and allow_all:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(d, int) and not isinstance(d, bool)
                                                             for d in value):
        raise CommandError(f"{name} must be a list of door numbers" + (' or "all"' if allow_all else ""))
    unknown = sorted(set(value) - known)
    if unknown:
        raise CommandError(f"no door {unknown[0]} on this unit (doors: {', '.join(map(str, sorted(known)))})")
    return frozenset(value)
