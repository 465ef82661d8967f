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
from typing import Any

from doorphoned import __version__
from doorphoned.config import ConfigError, load_config, to_dict
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
        lines.append(f"  {f['name']:<10} {f['state']}{'  ' + f['error'] if f['error'] else ''}")
    lines.append("doors:")
    lines += [f"  {line}" for line in fmt_relays(s["doors"]).splitlines()]
    if s["tamper"] is not None:
        lines.append(f"tamper: {s['tamper']}")
    lines.append(f"store: {s['store']['path']} ({s['store']['bytes'] / 1024:.0f} KiB, "
                 f"{s['store']['door_log_entries']} door-log entries)")
    return "\n".join(lines)


def fmt_relays(doors: list[dict[str, Any]]) -> str:
    lines = []
    for d in doors:
        drv = d["driver"]
        where = f"GPIO{drv['pin']}" if drv["driver"] == "relay" else drv.get("url", "")
        alarms = f"  ALARM: {', '.join(d['alarms'])}" if d["alarms"] else ""
        lines.append(f"{d['door']}: {d['name'] or '(unnamed)'} - {d['state']}, door {d['door_status']}, "
                     f"{d['lock']} {where}, {d['mode']} {d['hold_time']:g} s{alarms}")
    return "\n".join(lines) or "no doors configured"


def fmt_log(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in reversed(entries):
        door = f"door {e['door']}" if e["door"] is not None else "unit"
        if e["kind"] == "access":
            what = f"{'GRANTED' if e['granted'] else 'DENIED '} {e['credential']} ({e['subject']}): {e['reason']}"
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
    if args.json:
        print(_json({"valid": True, "config": to_dict(config)}))
    else:
        print(f"{args.file}: valid ({len(config.doors)} doors)")
    return 0


def _open_done(result: dict[str, Any]) -> str:
    return f"door {result['door']} opened"


def _level_text(result: dict[str, Any]) -> str:
    return f"log level {result['level']} ({result['name']})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doorphonectl", description="Installer CLI of doorphoned.")
    parser.add_argument("--version", action="version", version=f"doorphonectl {__version__}")
    parser.add_argument("--socket", type=Path, help="control socket (default $DOORPHONECTL_SOCKET, "
                        "./var/control.sock, /run/doorphoned/control.sock)")
    reads = argparse.ArgumentParser(add_help=False)
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

    logs = sub.add_parser("log", help="door log, log level").add_subparsers(dest="verb", required=True)
    doors = logs.add_parser("doors", parents=[reads], help="access decisions, door status, alarms")
    doors.add_argument("--limit", type=int, default=50)
    doors.add_argument("--door", type=int)
    doors.add_argument("--kind", choices=["access", "door_status", "alarm", "lock_fault", "relay_test"])
    doors.set_defaults(func=_remote("log.doors", fmt_log, limit=_Arg("limit"), door=_Arg("door"),
                                    kind=_Arg("kind")))
    level = logs.add_parser("level", parents=[reads], help="show or set the log level (1-7, default 3)")
    level.add_argument("level", type=int, nargs="?", choices=range(1, 8), metavar="1-7")
    level.set_defaults(func=_remote("log.level", _level_text, level=_Arg("level")))

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="verb", required=True)
    config.add_parser("show", parents=[reads], help="the running configuration (secrets hidden)").set_defaults(
        func=_remote("config.show", lambda r: f"# source: {r['source']}\n{_json(r['config'])}"))
    validate = config.add_parser("validate", parents=[reads], help="check a configuration file")
    validate.add_argument("file", type=Path)
    validate.set_defaults(func=_config_validate)

    sub.add_parser("doctor", parents=[reads], help="self-test of everything configured").set_defaults(func=_doctor)
    return parser


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
