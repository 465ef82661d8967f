"""``doorphonectl user ...``, ``pin set`` and ``card ...``: users and their own credentials."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from doorphoned.control.client import ControlClient, ControlError
from doorphoned.ctl.doors import doors_arg
from doorphoned.ctl.registry import Registry, arg, remote


def register(cli: Registry) -> None:
    """Register the user, PIN and card verbs."""
    cli.group("user", "users")
    cli.command("user add", "add a user",
                remote("user.add", _user_text, "name", "id", "department", "doors", "schedule", "enabled"),
                arg("name"), arg("--id", help="user id (default: generated)"), arg("--department", default=None),
                arg("--doors", type=doors_arg, default="all", help="1,2 or all (default)"),
                arg("--schedule", action="append", default=[], metavar="WINDOW",
                    help="'mon-fri 08:00-18:00' (repeatable; none = any time)"),
                arg("--disabled", dest="enabled", action="store_false", help="add switched off"))
    cli.command("user list", "list users", remote("user.list", lambda r: "\n".join(map(_user_text, r)) or "no users",
                                                  "limit"),
                arg("--limit", type=int, default=1000))
    cli.command("user show", "show a user", remote("user.show", _user_text, "user"), arg("user"))
    cli.command("user remove", "remove a user and all their credentials",
                remote("user.remove", lambda r: f"removed {r['removed']}", "user"), arg("user"))
    cli.group("pin", "private PINs")
    cli.command("pin set", "set a user's PIN (prompted, or first line of stdin)", _pin_set, arg("user"), json=False)
    cli.group("card", "cards (ISO 14443A UIDs)")
    for verb in ("add", "remove"):
        cli.command(f"card {verb}", f"{verb} a card", remote(f"card.{verb}", _pairs, "user", "uid"),
                    arg("user"), arg("uid"))


def _user_text(u: dict[str, Any]) -> str:
    """A user on one line: id, name, department, doors, schedule and (when shown) PIN and cards."""
    doors = "all doors" if u["doors"] == "all" else "doors " + ",".join(map(str, u["doors"]))
    extra = ""
    if "pin_set" in u:
        extra = f", PIN {'set' if u['pin_set'] else 'not set'}, cards: {', '.join(u['cards']) or 'none'}"
    schedule = "; ".join(u["schedule"]) or "any time"
    return (f"{u['id']}: {u['name']}{' [' + u['department'] + ']' if u['department'] else ''}"
            f"{'' if u['enabled'] else ' (DISABLED)'} - {doors}, {schedule}{extra}")


def _pairs(r: dict[str, Any]) -> str:
    return " ".join(f"{k} {v}" for k, v in r.items())


def _read_pin(args: argparse.Namespace) -> str:
    """A PIN from a prompt (typed twice, not echoed) or, for scripts, the first line of stdin."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    first = getpass.getpass(f"new PIN for {args.user}: ")
    if getpass.getpass("again: ") != first:
        raise ControlError("the two PINs differ; nothing changed")
    return first


def _pin_set(args: argparse.Namespace) -> int:
    """Set a PIN without it ever being an argument (argv is visible to every user in ps)."""
    pin = _read_pin(args)
    with ControlClient(args.socket) as client:
        client.call("pin.set", user=args.user, pin=pin)
    print(f"PIN set for {args.user}")
    return 0
