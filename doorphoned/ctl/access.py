"""``doorphonectl tempkey ...`` and ``access check``: temp keys and dry-run access decisions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from doorphoned.control.client import ControlClient
from doorphoned.ctl.doors import doors_arg
from doorphoned.ctl.face import check_face
from doorphoned.ctl.registry import Registry, arg, remote, show

REPEATS = ["never", "daily", "weekly"]


def register(cli: Registry) -> None:
    """Register the temp key and access-check verbs."""
    cli.group("tempkey", "temp keys (PIN + QR)")
    cli.command("tempkey create", "create a temp key; prints its id, PIN and QR",
                remote("tempkey.create", _created_key_text, "name", "doors", "repeat", "start", "end", "from=from_",
                       "to", "days", "count", "recipients=recipient"),
                arg("--name", required=True), arg("--doors", type=doors_arg, required=True, help="1,2"),
                arg("--repeat", choices=REPEATS, default="never"),
                arg("--start", help="ISO 8601 (default now; without offset: site time)"),
                arg("--end", required=True, help="ISO 8601"),
                arg("--from", dest="from_", metavar="HH:MM", help="daily/weekly: from time of day"),
                arg("--to", metavar="HH:MM", help="daily/weekly: to time of day"),
                arg("--days", help="weekly: mon,tue,... or mon-fri"),
                arg("--count", type=_count_arg, help="never: uses on each door, 1-100 (default 1)"),
                arg("--recipient", action="append", metavar="USER",
                    help="a delivery key for USER (repeat for more): opening logs a package, takes a capture"))
    cli.command("tempkey list", "list temp keys",
                remote("tempkey.list", lambda r: "\n".join(map(_key_text, r)) or "no temp keys"))
    cli.command("tempkey show", "show a temp key", remote("tempkey.show", fmt_key, "id"), arg("id"))
    cli.command("tempkey remove", "remove a temp key", remote("tempkey.remove", lambda r: f"removed {r['removed']}",
                                                              "id"), arg("id"))
    cli.command("tempkey qr", "show a temp key's QR again, or write it as PNG", _tempkey_qr,
                arg("id"), arg("--png", type=Path, help="write the QR code image here"))
    cli.group("access", "access decisions")
    cli.command("access check", "what would happen (and why) - moves no relay, uses no count", _access_check,
                arg("--door", type=int, required=True), _one_credential,
                arg("--at", help="ISO 8601 instant (default now; without offset: site time)"))


def _one_credential(parser: argparse.ArgumentParser) -> None:
    """``access check`` takes exactly one of --pin, --qr, --card, --face."""
    what = parser.add_mutually_exclusive_group(required=True)
    for option in ("--pin", "--qr", "--card"):
        what.add_argument(option)
    what.add_argument("--face", type=Path, metavar="PHOTO", help="a photo (JPEG/PNG): its face against every template")


def _count_arg(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"count must be a whole number, got {text!r}") from None
    if not 1 <= count <= 100:
        raise argparse.ArgumentTypeError("count must be between 1 and 100 (uses on each door)")
    return count


def _key_text(k: dict[str, Any]) -> str:
    """A temp key on one line: id, name, doors, repeat, validity, count and uses left."""
    when = f"{k['start']} -> {k['end']}" + (f", {k['window']}" if k["window"] else "")
    count = f", {k['each_door_counts']} use(s) per door" if k["each_door_counts"] else ""
    left = k.get("uses_left")
    uses = ", uses left " + " ".join(f"door {d}: {n}" for d, n in left.items()) if left else ""
    return f"{k['id']}: {k['name']} - doors {','.join(map(str, k['doors']))}, {k['repeat']}, {when}{count}{uses}"


def fmt_key(k: dict[str, Any]) -> str:
    """``tempkey show``: the key, then a table of uses per door (a count is per door, on this unit)."""
    lines = [f"temp key {k['id']}: {k['name']}",
             f"  repeat   {k['repeat']}" + (f", {k['window']}" if k["window"] else ""),
             f"  valid    {k['start']} -> {k['end']}",
             f"  doors    {', '.join(map(str, k['doors']))}"]
    if not k["each_door_counts"]:
        return "\n".join([*lines, "  uses     no count (daily and weekly keys are limited by time only)"])
    lines += [f"  uses     {k['each_door_counts']} per door", "", "  door  used  left"]
    uses, left = k.get("uses", {}), k.get("uses_left", {})
    lines += [f"  {door:>4}  {uses.get(str(door), 0):>4}  {left.get(str(door), 0):>4}" for door in k["doors"]]
    return "\n".join(lines)


def _qr_terminal(text: str) -> str:
    """The QR drawn with terminal characters (segno is imported only by the verbs that draw one)."""
    import io

    import segno

    out = io.StringIO()
    segno.make_qr(text, error="m").terminal(out, compact=True)
    return out.getvalue()


def _created_key_text(k: dict[str, Any]) -> str:
    return f"{_key_text(k)}\nPIN: {k['pin']}\nQR:  {k['qr']}\n{_qr_terminal(k['qr'])}"


def _check_text(r: dict[str, Any]) -> str:
    who = r["user"] or r["key"]
    subject = f" {who['name']} ({who['id']})" if who else ""
    verdict = "GRANTED" if r["granted"] else f"DENIED ({r['reason']})"
    line = f"door {r['door']} at {r['at']}: {verdict}{subject}" + (f" - {r['detail']}" if r["detail"] else "")
    return "\n".join([line, *_signed_lines(r["signed"])]) if r.get("signed") else line


def _signed_lines(s: dict[str, Any]) -> list[str]:
    """A signed key explained: the signature and which trusted key, the scope, the terms, revocation, uses."""
    if s["format"] != "ok":
        return [f"  signed key: unreadable ({s['error']})"]
    if s["signature"] != "ok":
        trusted = ", ".join(f"{k['label']} {k['fingerprint']}" for k in s["trusted_keys"]) or "none"
        return [f"  signature: {s['signature']} - {s['signature_error']}",
                f"  signed by key {s['signer']}; this unit trusts: {trusted}"]
    lines = [f"  signature: ok (trusted key {s['trusted_key']}, fingerprint {s['signer']})",
             f"  scope: {s['scope']} " + ("(this unit)" if s["scope_ok"] else
                                        f"(NOT this unit: {', '.join(s['unit_scopes']) or 'no scope set'})"),
             f"  terms: {_key_text(s['terms'])}"]
    revoked = s["revoked"]
    lines.append(f"  revoked: since {revoked['revoked']} ({revoked['source']})" if revoked else "  revoked: no")
    if s["synced_key"]:
        lines.append(f"  a synced key has this id, its terms apply: {_key_text(s['synced_key'])}")
    return lines


def _tempkey_qr(args: argparse.Namespace) -> int:
    """Print the key's PIN and QR again, as JSON, or write the QR as a PNG file."""
    import segno

    with ControlClient(args.socket) as client:
        result = client.call("tempkey.qr", id=args.id)
    if args.png:
        segno.make_qr(result["qr"], error="m").save(str(args.png), scale=8, border=4)
        print(f"{args.png}: QR of {result['id']} (PIN {result['pin']})")
    elif args.json:
        show(args, result, str)
    else:
        print(f"PIN: {result['pin']}\nQR:  {result['qr']}\n{_qr_terminal(result['qr'])}")
    return 0


def _access_check(args: argparse.Namespace) -> int:
    """Ask the daemon what it would decide; argparse has let exactly one credential option through."""
    if args.face is not None:
        return check_face(args)
    with ControlClient(args.socket) as client:
        result = client.call("access.check", door=args.door, pin=args.pin, qr=args.qr, card=args.card, at=args.at)
    show(args, result, _check_text)
    return 0
