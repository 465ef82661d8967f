"""One command registry for the control socket and MQTT, and what every command handler shares.

Each feature folder declares its commands (:class:`Command`: its name on the control socket, its name on
MQTT or none, its handler, the argument fields it declares, a one-line summary) and the composition root
adds them to one :class:`Registry`. The control socket server and the cloud link both look a command up
there, and both refuse an unknown command or an undeclared field there, with the same reason, before
any handler runs (a typo such as ``{"dor": 2}`` must not fall back to a default and act). Where the two
interfaces differ on purpose (``user.add`` on the socket, ``user.upsert`` on MQTT; who may ask for a
relay test), they are two declarations, each with its own wire name.

The error type and the caller's identity live here, in the core, so that a feature's commands never
import the socket server or the cloud link to report a refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Interface = Literal["socket", "mqtt"]
INTERFACES: tuple[Interface, ...] = ("socket", "mqtt")


class CommandError(Exception):
    """A request that cannot be carried out; the message goes back as the one-line reason."""


@dataclass(frozen=True)
class Peer:
    """Who asked over the control socket (its SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class CloudCaller:
    """The cloud: a command that arrived over MQTT (its envelope's ``id`` and ``ts`` already checked)."""


CLOUD = CloudCaller()
Caller = Peer | CloudCaller
Handler = Callable[[dict[str, Any], Caller], Awaitable[Any]]


def installer(caller: Caller) -> Peer:
    """The local user behind a socket-only command; the declaration already keeps the cloud out, this says
    so again in the one place a handler needs the uid."""
    if not isinstance(caller, Peer):
        raise CommandError("only over the control socket")
    return caller


def shown(text: str, limit: int = 40) -> str:
    """A name from outside, quoted, short, ASCII, escaped: fit for a reply and a log line."""
    return ascii(text[:limit])


@dataclass(frozen=True)
class Command:
    """One command as a feature declares it; ``socket`` / ``mqtt`` is its name there, None where it is not
    offered."""

    socket: str | None
    mqtt: str | None
    handler: Handler
    fields: frozenset[str] = field(default_factory=frozenset)
    summary: str = ""

    def __post_init__(self) -> None:
        if self.socket is None and self.mqtt is None:
            raise ValueError(f"command {self.summary!r} is offered on no interface")
        object.__setattr__(self, "fields", frozenset(self.fields))

    def name_on(self, interface: Interface) -> str | None:
        return self.socket if interface == "socket" else self.mqtt

    def undeclared(self, name: str, args: dict[str, Any]) -> str:
        """The first argument this command does not declare, as the refusal; '' when there is none."""
        unknown = sorted(set(args) - self.fields)
        if not unknown:
            return ""
        return f"{name}: unknown field {shown(unknown[0])} (expected: {', '.join(sorted(self.fields)) or 'none'})"


class Registry:
    """Every command of every feature, looked up by its name on one interface."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._by: dict[Interface, dict[str, Command]] = {"socket": {}, "mqtt": {}}
        self.add(*commands)

    def add(self, *commands: Command) -> None:
        """Declare commands; a name taken twice on one interface is a programming error, refused at once."""
        for command in commands:
            for interface in INTERFACES:
                name = command.name_on(interface)
                if name is None:
                    continue
                if name in self._by[interface]:
                    raise ValueError(f"{interface} command {name!r} declared twice")
                self._by[interface][name] = command

    def names(self, interface: Interface) -> list[str]:
        return sorted(self._by[interface])

    def get(self, interface: Interface, name: str) -> Command | None:
        return self._by[interface].get(name)

    def check(self, interface: Interface, name: str, args: dict[str, Any]) -> Command:
        """The command ``name`` on ``interface`` if it exists and declares every field of ``args``;
        otherwise :class:`CommandError` with the reason both interfaces answer."""
        command = self._by[interface].get(name)
        if command is None:
            raise CommandError(f"unknown command {shown(name)}")
        problem = command.undeclared(name, args)
        if problem:
            raise CommandError(problem)
        return command


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
