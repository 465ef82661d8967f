"""``doorphonectl``: the installer's CLI. Talks to the daemon over its control socket.

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr. Every read
command takes ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from doorphoned import __version__
from doorphoned.config import ConfigError, config_warnings, load_config, to_dict
from doorphoned.control.client import ControlClient, ControlError

EXIT_FAIL = 1
EXIT_DOCTOR_FAILED = 2

Formatter = Callable[[Any], str]


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def _local_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- human formats


def fmt_status(s: dict[str, Any]) -> str:
    lines = [f"doorphoned {s['version']} (pid {s['pid']}), up {s['uptime_s']:.0f} s, site {s['site']!r} "
             f"[{s['timezone']}], log level {s['log_level']}", f"config: {s['config_source']}", "features:"]
    for f in s["features"]:
        reader = f"  reader {f['reader']}" + (f": {f['reader_error']}" if f.get("reader_error") else "") \
            if "reader" in f else ""
        lost = f"  hardware {f['hardware']}" if f.get("hardware_connected") is False else ""
        restarts = f"  ({f['restarts']} restarts)" if f.get("restarts") else ""
        lines.append(f"  {f['name']:<10} {f['state']}{'  ' + f['error'] if f['error'] else ''}{reader}{restarts}{lost}")
    lines.append("doors:")
    lines += [f"  {line}" for line in fmt_relays(s["doors"]).splitlines()]
    if s["tamper"] is not None:
        lines.append(f"tamper: {s['tamper']}")
    sip = next((f["sip"] for f in s["features"] if "sip" in f), None)
    if sip is not None:
        lines.append(fmt_sip(sip))
    lines.append(f"store: {s['store']['path']} ({s['store']['bytes'] / 1024:.0f} KiB, "
                 f"{s['store']['door_log_entries']} door-log entries)")
    c = s["credentials"]
    lines.append(f"credentials: {c['users']} users ({c['private_pins']} with a PIN, {c['cards']} cards), "
                 f"{c['temp_keys']} temp keys")
    return "\n".join(lines)


def fmt_sip(sip: dict[str, Any]) -> str:
    reg = sip["registration"]
    if not reg["configured"]:
        registration = "no registrar (peer to peer)"
    elif reg["active"]:
        registration = f"registered at {reg['registrar']} ({reg['code']} {reg['text']}, expires {reg['expires']} s)"
    else:
        registration = f"NOT registered at {reg['registrar']} ({reg['code']} {reg['text']})".rstrip()
    return (f"sip: {'running' if sip['running'] else 'NOT running'} on {sip['listening']}, {registration}, "
            f"{len(sip['active_calls'])} active calls, {sip['rejected']} refused, {sip['restarts']} restarts")


def fmt_calls(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in reversed(entries):
        who = e["peer"] or e["target"]
        opened = f", opened door {','.join(map(str, e['opened']))}" if e["opened"] else ""
        codec = f", {e['quality']['codec']}" if e["quality"].get("codec") else ""
        lines.append(f"{_local_time(e['started'])}  #{e['id']:<6} {e['type']:<9} {who} "
                     f"({e['reason']}), {e['duration_s']:.1f} s{opened}{codec}")
    return "\n".join(lines) or "no calls"


def _call_text(r: dict[str, Any]) -> str:
    if not r["called"]:
        return f"{r['target']}: not called ({r['reason']})"
    return f"calling {r['target']}: " + " then ".join(" + ".join(w) for w in r["waves"])


def fmt_relays(doors: list[dict[str, Any]]) -> str:
    lines = []
    for d in doors:
        drv = d["driver"]
        where = f"GPIO{drv['pin']}" if drv["driver"] == "relay" else drv.get("url", "")
        alarms = f"  ALARM: {', '.join(d['alarms'])}" if d["alarms"] else ""
        alarms += f"  FAULT: {d['fault']}" if d.get("fault") else ""
        lines.append(f"{d['door']}: {d['name'] or '(unnamed)'} - {d['state']}, door {d['door_status']}, "
                     f"{d['lock']} {where}, {d['mode']} {d['hold_time']:g} s{alarms}")
    return "\n".join(lines) or "no doors configured"


def fmt_log(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in reversed(entries):
        door = f"door {e['door']}" if e["door"] is not None else "unit"
        if e["kind"] == "access":
            what = f"{'GRANTED' if e['granted'] else 'DENIED '} {e['credential']} ({e['subject']}): {e['reason']}"
            if e["detail"].get("detail"):  # why a refusal; "opened during call with ..." for DTMF
                what += f" - {e['detail']['detail']}"
            if e["detail"].get("count"):  # repeated refusals folded into this entry
                what += f" (x{e['detail']['count']}, last {_local_time(e['detail']['last'])})"
        elif e["kind"] == "alarm":
            what = f"ALARM {e['reason']} {'raised' if e['detail'].get('active') else 'cleared'}"
        elif e["kind"] == "lock_fault":
            what = f"LOCK FAULT {e['reason']}: {e['detail'].get('detail', '')}"
        else:
            what = f"{e['kind']} {e['reason']}"
        lines.append(f"{_local_time(e['ts'])}  #{e['id']:<6} {door:<7} {what}")
    return "\n".join(lines) or "no entries"


def fmt_test(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        if "door" in r:
            lines.append(f"door {r['door']} ({r['lock']}): pulse {r['pulse']}, locked again: "
                         f"{'yes' if r['locked_again'] else 'NO'}, sensor {r['sensor'] or 'none'}, "
                         f"exit button {r['exit_button'] or 'none'}")
        else:
            lines.append(f"tamper: {r['tamper'] or 'none'}")
    return "\n".join(lines)


def fmt_cloud(c: dict[str, Any]) -> str:
    if not c["enabled"]:
        return "cloud link: off (set cloud.url and cloud.device_id)"
    state = "connected" if c["connected"] else "NOT connected"
    lines = [f"cloud link to {c['broker']} as {c['device_id']}: {state} ({c['connects']} connects)",
             f"outbox: {c['outbox_depth']} events waiting, {c['inflight']} in flight, {c['outbox_dropped']} dropped, "
             f"{c.get('folds_held', 0)} runs of repeated refusals held for their summary",
             f"commands handled: {c['commands']}"]
    if c["last_error"]:
        lines.append(f"last error: {c['last_error']}")
    return "\n".join(lines)


def fmt_doctor(results: list[dict[str, str]]) -> str:
    marks = {"ok": "  ok ", "warn": " WARN", "fail": " FAIL"}
    return "\n".join(f"{marks[r['state']]}  {r['check']}: {r['detail']}" for r in results)


# ---------------------------------------------------------------- commands


def _remote(cmd: str, fmt: Formatter, **static: Any) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        params = {k: (getattr(args, v) if isinstance(v, _Arg) else v) for k, v in static.items()}
        params = {k: v for k, v in params.items() if v is not None}
        with ControlClient(args.socket) as client:
            result = client.call(cmd, **params)
        print(_json(result) if getattr(args, "json", False) else fmt(result))
        return 0
    return run


class _Arg(str):
    """Marks a static parameter as "take this attribute of the parsed arguments"."""


def _doctor(args: argparse.Namespace) -> int:
    with ControlClient(args.socket) as client:
        results = client.call("doctor")
    print(_json(results) if args.json else fmt_doctor(results))
    return EXIT_DOCTOR_FAILED if any(r["state"] == "fail" for r in results) else 0


def _config_validate(args: argparse.Namespace) -> int:
    """Validate a file locally (no daemon needed): exactly the rules the daemon applies at start."""
    config = load_config(args.file, env={})
    warnings = config_warnings(config)
    for warning in warnings:
        print(f"doorphonectl: warning: {warning}", file=sys.stderr)
    if args.json:
        print(_json({"valid": True, "warnings": warnings, "config": to_dict(config)}))
    else:
        print(f"{args.file}: valid ({len(config.doors)} doors)")
    return 0


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (the value as JSON when it parses: 5, true, [1, 2], "x"; else as text)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _config_set(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = dict(args.settings) if args.verb == "set" else dict.fromkeys(args.keys)
    with ControlClient(args.socket) as client:
        result = client.call("config.set", settings=settings)
    if args.json:
        print(_json(result))
        return 0
    lines = [f"run-time settings: {_json(result['settings'])}",
             f"changed sections: {', '.join(result['changed']) or 'none'}"]
    if result["shadowed_by_environment"]:
        lines.append("overridden by environment variables: " + ", ".join(result["shadowed_by_environment"]))
    print("\n".join(lines))
    return 0


def _open_done(result: dict[str, Any]) -> str:
    return f"door {result['door']} opened"


def _level_text(result: dict[str, Any]) -> str:
    return f"log level {result['level']} ({result['name']})"


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's contract for errors: one line on stderr, non-zero exit."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="doorphonectl", description="Installer CLI of doorphoned.")
    parser.add_argument("--version", action="version", version=f"doorphonectl {__version__}")
    parser.add_argument("--socket", type=Path, help="control socket (default $DOORPHONECTL_SOCKET, "
                        "./var/control.sock, /run/doorphoned/control.sock)")
    reads = _Parser(add_help=False)
    reads.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("status", parents=[reads], help="daemon, features, doors").set_defaults(
        func=_remote("status", fmt_status))

    relay = sub.add_parser("relay", help="doors and their locks").add_subparsers(dest="verb", required=True)
    relay.add_parser("list", parents=[reads], help="configured doors and lock states").set_defaults(
        func=_remote("relay.list", fmt_relays))
    opener = relay.add_parser("open", parents=[reads], help="open a door now (logged as installer)")
    opener.add_argument("door", type=int)
    opener.set_defaults(func=_remote("relay.open", _open_done, door=_Arg("door")))
    tester = relay.add_parser("test", parents=[reads], help="pulse each lock in turn and read every input")
    tester.add_argument("--pulse-ms", type=int, default=None, help="test pulse length (default 1000)")
    tester.set_defaults(func=_remote("relay.test", fmt_test, pulse_ms=_Arg("pulse_ms")))

    logs = sub.add_parser("log", help="door log, call history, log level").add_subparsers(dest="verb", required=True)
    doors = logs.add_parser("doors", parents=[reads], help="access decisions, door status, alarms")
    doors.add_argument("--limit", type=int, default=50)
    doors.add_argument("--door", type=int)
    doors.add_argument("--kind", choices=["access", "door_status", "alarm", "lock_fault", "relay_test"])
    doors.set_defaults(func=_remote("log.doors", fmt_log, limit=_Arg("limit"), door=_Arg("door"),
                                    kind=_Arg("kind")))
    calls = logs.add_parser("calls", parents=[reads], help="call history: outgoing, incoming, missed, forwarded")
    calls.add_argument("--limit", type=int, default=50)
    calls.add_argument("--type", choices=["outgoing", "incoming", "missed", "forwarded"])
    calls.set_defaults(func=_remote("log.calls", fmt_calls, limit=_Arg("limit"), type=_Arg("type")))
    level = logs.add_parser("level", parents=[reads], help="show or set the log level (1-7, default 3)")
    level.add_argument("level", type=int, nargs="?", choices=range(1, 8), metavar="1-7")
    level.set_defaults(func=_remote("log.level", _level_text, level=_Arg("level")))

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="verb", required=True)
    config.add_parser("show", parents=[reads], help="the running configuration (secrets hidden)").set_defaults(
        func=_remote("config.show", lambda r: f"# source: {r['source']}\n# run-time settings: "
                     f"{_json(r['settings']) if r['settings'] else 'none'}\n{_json(r['config'])}"))
    validate = config.add_parser("validate", parents=[reads], help="check a configuration file")
    validate.add_argument("file", type=Path)
    validate.set_defaults(func=_config_validate)
    setter = config.add_parser("set", parents=[reads], help="change run-time settings (kept across restarts)")
    setter.add_argument("settings", nargs="+", type=_setting, metavar="KEY=VALUE",
                        help="e.g. doors.1.hold_time=5 site.name='\"Lobby\"'")
    setter.set_defaults(func=_config_set)
    unsetter = config.add_parser("unset", parents=[reads], help="return run-time settings to the file's values")
    unsetter.add_argument("keys", nargs="+", metavar="KEY")
    unsetter.set_defaults(func=_config_set)

    sub.add_parser("doctor", parents=[reads], help="self-test of everything configured").set_defaults(func=_doctor)
    cloud = sub.add_parser("cloud", help="the cloud link").add_subparsers(dest="verb", required=True)
    cloud.add_parser("status", parents=[reads], help="connection, last error, outbox depth").set_defaults(
        func=_remote("cloud.status", fmt_cloud))
    caller = sub.add_parser("call", parents=[reads], help="call a target (id or name) or a sip: URI")
    caller.add_argument("target")
    caller.set_defaults(func=_remote("call", _call_text, target=_Arg("target")))
    sub.add_parser("hangup", parents=[reads], help="end every call, ringing or answered").set_defaults(
        func=_remote("hangup", lambda r: f"{r['calls_ended']} call(s) ended"))
    _credential_commands(sub, reads)
    return parser


# ---------------------------------------------------------------- users, PINs, cards, temp keys, access check


def _doors_arg(text: str) -> list[int] | str:
    if text.strip().lower() == "all":
        return "all"
    try:
        doors = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"doors must be numbers like 1,2 (got {text!r})") from None
    if not doors or any(not 1 <= d <= 16 for d in doors):
        raise argparse.ArgumentTypeError("doors are numbers 1-16, e.g. 1,2")
    return doors


def _count_arg(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"count must be a whole number, got {text!r}") from None
    if not 1 <= count <= 100:
        raise argparse.ArgumentTypeError("count must be between 1 and 100 (uses on each door)")
    return count


def _user_text(u: dict[str, Any]) -> str:
    doors = "all doors" if u["doors"] == "all" else "doors " + ",".join(map(str, u["doors"]))
    extra = ""
    if "pin_set" in u:
        extra = f", PIN {'set' if u['pin_set'] else 'not set'}, cards: {', '.join(u['cards']) or 'none'}"
    schedule = "; ".join(u["schedule"]) or "any time"
    return (f"{u['id']}: {u['name']}{' [' + u['department'] + ']' if u['department'] else ''}"
            f"{'' if u['enabled'] else ' (DISABLED)'} - {doors}, {schedule}{extra}")


def _key_text(k: dict[str, Any]) -> str:
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
    return f"door {r['door']} at {r['at']}: {verdict}{subject}" + (f" - {r['detail']}" if r["detail"] else "")


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
    pin = _read_pin(args)
    with ControlClient(args.socket) as client:
        client.call("pin.set", user=args.user, pin=pin)
    print(f"PIN set for {args.user}")
    return 0


def _tempkey_qr(args: argparse.Namespace) -> int:
    import segno

    with ControlClient(args.socket) as client:
        result = client.call("tempkey.qr", id=args.id)
    if args.png:
        segno.make_qr(result["qr"], error="m").save(str(args.png), scale=8, border=4)
        print(f"{args.png}: QR of {result['id']} (PIN {result['pin']})")
    elif args.json:
        print(_json(result))
    else:
        print(f"PIN: {result['pin']}\nQR:  {result['qr']}\n{_qr_terminal(result['qr'])}")
    return 0


def _access_check(args: argparse.Namespace) -> int:
    with ControlClient(args.socket) as client:
        result = client.call("access.check", door=args.door, pin=args.pin, qr=args.qr, card=args.card, at=args.at)
    print(_json(result) if args.json else _check_text(result))
    return 0


def _credential_commands(sub: Any, reads: _Parser) -> None:
    users = sub.add_parser("user", help="users").add_subparsers(dest="verb", required=True)
    add = users.add_parser("add", parents=[reads], help="add a user")
    add.add_argument("name")
    add.add_argument("--id", help="user id (default: generated)")
    add.add_argument("--department", default=None)
    add.add_argument("--doors", type=_doors_arg, default="all", help="1,2 or all (default)")
    add.add_argument("--schedule", action="append", default=[], metavar="WINDOW",
                     help="'mon-fri 08:00-18:00' (repeatable; none = any time)")
    add.add_argument("--disabled", dest="enabled", action="store_false", help="add switched off")
    add.set_defaults(func=_remote("user.add", _user_text, name=_Arg("name"), id=_Arg("id"),
                                  department=_Arg("department"), doors=_Arg("doors"), schedule=_Arg("schedule"),
                                  enabled=_Arg("enabled")))
    listing = users.add_parser("list", parents=[reads], help="list users")
    listing.add_argument("--limit", type=int, default=1000)
    listing.set_defaults(func=_remote("user.list", lambda r: "\n".join(map(_user_text, r)) or "no users",
                                      limit=_Arg("limit")))
    for verb, cmd in (("show", "user.show"), ("remove", "user.remove")):
        p = users.add_parser(verb, parents=[reads], help=f"{verb} a user" + (" and all their credentials"
                                                                           if verb == "remove" else ""))
        p.add_argument("user")
        p.set_defaults(func=_remote(cmd, _user_text if verb == "show" else lambda r: f"removed {r['removed']}",
                                    user=_Arg("user")))

    _secret_commands(sub, reads)
    _access_commands(sub, reads)


def _secret_commands(sub: Any, reads: _Parser) -> None:
    pins = sub.add_parser("pin", help="private PINs").add_subparsers(dest="verb", required=True)
    pin_set = pins.add_parser("set", help="set a user's PIN (prompted, or first line of stdin)")
    pin_set.add_argument("user")
    pin_set.set_defaults(func=_pin_set)

    cards = sub.add_parser("card", help="cards (ISO 14443A UIDs)").add_subparsers(dest="verb", required=True)
    for verb in ("add", "remove"):
        p = cards.add_parser(verb, parents=[reads], help=f"{verb} a card")
        p.add_argument("user")
        p.add_argument("uid")
        p.set_defaults(func=_remote(f"card.{verb}", lambda r: " ".join(f"{k} {v}" for k, v in r.items()),
                                    user=_Arg("user"), uid=_Arg("uid")))



def _access_commands(sub: Any, reads: _Parser) -> None:
    keys = sub.add_parser("tempkey", help="temp keys (PIN + QR)").add_subparsers(dest="verb", required=True)
    create = keys.add_parser("create", parents=[reads], help="create a temp key; prints its id, PIN and QR")
    create.add_argument("--name", required=True)
    create.add_argument("--doors", type=_doors_arg, required=True, help="1,2")
    create.add_argument("--repeat", choices=["never", "daily", "weekly"], default="never")
    create.add_argument("--start", help="ISO 8601 (default now; without offset: site time)")
    create.add_argument("--end", required=True, help="ISO 8601")
    create.add_argument("--from", dest="from_", metavar="HH:MM", help="daily/weekly: from time of day")
    create.add_argument("--to", metavar="HH:MM", help="daily/weekly: to time of day")
    create.add_argument("--days", help="weekly: mon,tue,... or mon-fri")
    create.add_argument("--count", type=_count_arg, help="never: uses on each door, 1-100 (default 1)")
    create.set_defaults(func=_remote("tempkey.create", _created_key_text, name=_Arg("name"), doors=_Arg("doors"),
                                     repeat=_Arg("repeat"), start=_Arg("start"), end=_Arg("end"),
                                     **{"from": _Arg("from_")}, to=_Arg("to"), days=_Arg("days"),
                                     count=_Arg("count")))
    klist = keys.add_parser("list", parents=[reads], help="list temp keys")
    klist.set_defaults(func=_remote("tempkey.list", lambda r: "\n".join(map(_key_text, r)) or "no temp keys"))
    for verb in ("show", "remove"):
        p = keys.add_parser(verb, parents=[reads], help=f"{verb} a temp key")
        p.add_argument("id")
        p.set_defaults(func=_remote(f"tempkey.{verb}", fmt_key if verb == "show" else
                                    lambda r: f"removed {r['removed']}", id=_Arg("id")))
    qr = keys.add_parser("qr", parents=[reads], help="show a temp key's QR again, or write it as PNG")
    qr.add_argument("id")
    qr.add_argument("--png", type=Path, help="write the QR code image here")
    qr.set_defaults(func=_tempkey_qr)

    access = sub.add_parser("access", help="access decisions").add_subparsers(dest="verb", required=True)
    check = access.add_parser("check", parents=[reads],
                              help="what would happen (and why) - moves no relay, uses no count")
    check.add_argument("--door", type=int, required=True)
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("--pin")
    what.add_argument("--qr")
    what.add_argument("--card")
    check.add_argument("--at", help="ISO 8601 instant (default now; without offset: site time)")
    check.set_defaults(func=_access_check)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ControlError as exc:
        print(f"doorphonectl: {exc}", file=sys.stderr)
    except ConfigError as exc:
        print(f"doorphonectl: invalid configuration: {exc}", file=sys.stderr)
    except BrokenPipeError:
        pass
    return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
