"""``doorphonectl phone add|list|remove``: users' phone keys (NFC phone tap, Bluetooth; docs/phone.md)."""

from __future__ import annotations

import argparse
from typing import Any

from doorphoned.control.client import ControlClient, ControlError
from doorphoned.ctl.registry import Registry, arg, remote, show


def register(cli: Registry) -> None:
    """Register the phone verbs."""
    cli.group("phone", "phone keys (NFC phone tap, Bluetooth)")
    cli.command("phone add", "enrol a phone's P-256 public key (a PEM file made on the phone) for a user", _phone_add,
                arg("user"), arg("--public-key", required=True, metavar="FILE", help="the phone's public key (PEM)"),
                arg("--id", default=None, help="key id (default: generated)"),
                arg("--modes", default=None, help="nfc,shake,hands-free,tap (default: all)"),
                arg("--expires", default=None, metavar="DATETIME", help="ISO 8601; none = no expiry"))
    cli.command("phone list", "list phone keys", remote("phone.list", _phones_text, "user"),
                arg("--user", default=None))
    cli.command("phone remove", "remove a phone key (it stops at once)",
                remote("phone.remove", lambda r: f"removed {r['removed']}", "id"), arg("id"))


def _phone_text(p: dict[str, Any]) -> str:
    expires = f", expires {p['expires']}" if p["expires"] else ""
    return f"{p['id']}: user {p['user']}, modes {','.join(p['modes'])}, tag {p['tag']}{expires} ({p['source']})"


def _phones_text(r: list[dict[str, Any]]) -> str:
    return "\n".join(map(_phone_text, r)) or "no phone keys"


def _phone_add(args: argparse.Namespace) -> int:
    """The PEM is read here and sent as text: the daemon need not be able to read the installer's files."""
    try:
        with open(args.public_key, encoding="utf-8", errors="replace") as file:
            text = file.read(4096)
    except OSError as exc:
        raise ControlError(f"cannot read {args.public_key}: {exc.strerror}") from exc
    modes = args.modes.split(",") if args.modes else None
    params = {"user": args.user, "public_key": text, "id": args.id, "modes": modes, "expires": args.expires}
    with ControlClient(args.socket) as client:
        result = client.call("phone.add", **{k: v for k, v in params.items() if v is not None})
    show(args, result, _phone_text)
    return 0
