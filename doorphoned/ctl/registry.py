"""The one small API every ``doorphonectl`` feature module registers its verbs on.

A feature module has a ``register(cli)`` function that declares its command groups and commands as data
(path, help, runner, arguments). Nothing touches argparse until :meth:`Registry.build`, so the modules can be
listed in any order and still give the parser the CLI's historic order (``--help`` and argparse's
"invalid choice (choose from ...)" error list the verbs in that order: both are part of the contract).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from doorphoned.control.client import ControlClient

Runner = Callable[[argparse.Namespace], int]
"""Runs a parsed command; returns the exit status."""
Formatter = Callable[[Any], str]
"""Turns a daemon result into the human (non ``--json``) text."""
Arguments = Callable[[argparse.ArgumentParser], None]
"""Adds a command's own arguments to its parser."""


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's contract for errors: one line on stderr, non-zero exit."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see --help)\n")


def one_line(text: str) -> str:
    """``text`` with every unprintable character escaped (newline, ESC, bidi controls, lone surrogates).

    Error messages echo what the user typed; escaped, they stay one line on stderr and cannot move the
    terminal's cursor or reverse the text around them.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def to_json(data: Any) -> str:
    """The ``--json`` rendering of every command (indented; dates and paths as text)."""
    return json.dumps(data, indent=2, default=str)


def local_time(iso: str) -> str:
    """An ISO 8601 instant from the daemon in this machine's local time, to the second."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def show(args: argparse.Namespace, result: Any, fmt: Formatter) -> None:
    """Print a result as JSON when ``--json`` was given, else in its human format."""
    print(to_json(result) if getattr(args, "json", False) else fmt(result))


def arg(*names: str, **options: Any) -> Arguments:
    """One ``add_argument`` call kept as data until the parser is built."""
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(*names, **options)
    return add


def remote(cmd: str, fmt: Formatter, *fields: str) -> Runner:
    """A runner that sends control command ``cmd`` and prints its result with ``fmt`` (or as JSON).

    Each field names a parsed argument sent as a parameter of the same name, or ``wire=attribute`` where
    the two differ (``from=from_``); arguments left at None are not sent, so the daemon's defaults apply.
    """
    pairs = [(wire, attribute or wire) for wire, _, attribute in (field.partition("=") for field in fields)]

    def run(args: argparse.Namespace) -> int:
        params = {wire: getattr(args, attribute) for wire, attribute in pairs}
        with ControlClient(args.socket) as client:
            result = client.call(cmd, **{k: v for k, v in params.items() if v is not None})
        show(args, result, fmt)
        return 0
    return run


@dataclass(frozen=True)
class Command:
    """One verb: ``("status",)`` at the top or ``("relay", "open")`` in a group."""

    path: tuple[str, ...]
    help: str
    run: Runner
    arguments: tuple[Arguments, ...]
    json: bool

    @property
    def name(self) -> str:
        return " ".join(self.path)


class Registry:
    """Collects the groups and commands of every feature module, then builds one argparse parser."""

    def __init__(self) -> None:
        self._groups: dict[str, str] = {}
        self._commands: dict[str, Command] = {}

    def group(self, name: str, help: str) -> None:
        """Declare a top-level group of verbs (``relay``, ``log``); any module may add verbs to it."""
        if name in self._groups:
            raise ValueError(f"doorphonectl group {name!r} declared twice")
        self._groups[name] = help

    def command(self, path: str, help: str, run: Runner, *arguments: Arguments, json: bool = True) -> None:
        """Register ``path`` ("status" or "group verb"); ``json`` adds the ``--json`` option."""
        words = tuple(path.split())
        if len(words) not in (1, 2):
            raise ValueError(f"doorphonectl command {path!r}: a command is one word or a group and a verb")
        command = Command(words, help, run, arguments, json)
        if command.name in self._commands:
            raise ValueError(f"doorphonectl command {command.name!r} registered twice")
        self._commands[command.name] = command

    def build(self, parser: Parser, order: Sequence[str]) -> Parser:
        """Add every registered command to ``parser``, in ``order`` first, the rest as registered."""
        self._check()
        rank = {name: i for i, name in enumerate(order)}
        commands = sorted(self._commands.values(), key=lambda c: rank.get(c.name, len(rank)))
        tops = sorted(dict.fromkeys(c.path[0] for c in commands), key=lambda n: rank.get(n, len(rank)))
        reads = Parser(add_help=False)
        reads.add_argument("--json", action="store_true", help="machine-readable output")
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for top in tops:
            if top not in self._groups:
                self._add(sub, self._commands[top], reads)
                continue
            verbs = sub.add_parser(top, help=self._groups[top]).add_subparsers(dest="verb", required=True)
            for command in (c for c in commands if c.path[0] == top):
                self._add(verbs, command, reads)
        return parser

    def _check(self) -> None:
        """Refuse a registry argparse would build wrong: a verb in an undeclared group, a clash, an empty group."""
        for command in self._commands.values():
            grouped = len(command.path) == 2
            if grouped != (command.path[0] in self._groups):
                raise ValueError(f"doorphonectl command {command.name!r}: "
                                 + ("no such group" if grouped else "the name of a group"))
        used = {c.path[0] for c in self._commands.values()}
        if empty := sorted(set(self._groups) - used):
            raise ValueError(f"doorphonectl groups without a verb: {', '.join(empty)}")

    @staticmethod
    def _add(sub: Any, command: Command, reads: Parser) -> None:
        parser = sub.add_parser(command.path[-1], parents=[reads] if command.json else [], help=command.help)
        for add in command.arguments:
            add(parser)
        parser.set_defaults(func=command.run)
