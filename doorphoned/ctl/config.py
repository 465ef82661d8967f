"""``doorphonectl config ...``: the running configuration, file validation and run-time settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from doorphoned.control.client import ControlClient
from doorphoned.ctl.registry import Registry, arg, one_line, remote, to_json


def register(cli: Registry) -> None:
    """Register the configuration verbs."""
    cli.group("config", "configuration")
    cli.command("config show", "the running configuration (secrets hidden)", remote("config.show", _shown))
    cli.command("config validate", "check a configuration file", _validate, arg("file", type=Path))
    cli.command("config set", "change run-time settings (kept across restarts)", _set,
                arg("settings", nargs="+", type=_setting, metavar="KEY=VALUE",
                    help="e.g. doors.1.hold_time=5 site.name='\"Lobby\"'"))
    cli.command("config unset", "return run-time settings to the file's values", _set,
                arg("keys", nargs="+", metavar="KEY"))


def _shown(r: dict[str, Any]) -> str:
    return (f"# source: {r['source']}\n# run-time settings: "
            f"{to_json(r['settings']) if r['settings'] else 'none'}\n{to_json(r['config'])}")


def _validate(args: argparse.Namespace) -> int:
    """Validate a file locally (no daemon needed): exactly the rules the daemon applies at start.

    The settings of every feature are imported here, not at the top: that is 0.2 s of CPU which every other
    command, a one-line request to the daemon, would pay at each start.
    """
    from doorphoned.app.config import load_config
    from doorphoned.core.config import ConfigError, config_warnings, to_dict

    try:
        config = load_config(args.file, env={})
    except ConfigError as exc:
        print(f"doorphonectl: invalid configuration: {one_line(str(exc))}", file=sys.stderr)
        return 1
    warnings = config_warnings(config)
    for warning in warnings:
        print(f"doorphonectl: warning: {one_line(warning)}", file=sys.stderr)
    if args.json:
        print(to_json({"valid": True, "warnings": warnings, "config": to_dict(config)}))
    else:
        print(f"{args.file}: valid ({len(config.doors)} doors)")
    return 0


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (the value as JSON when it parses: 5, true, [1, 2], "x"; else as text).

    JSON nested deeper than Python's recursion limit does not parse either: it goes as text too.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except (ValueError, RecursionError):
        return key.strip(), value


def _set(args: argparse.Namespace) -> int:
    """``config set`` and ``config unset`` (unset sends the keys with no value)."""
    settings: dict[str, Any] = dict(args.settings) if args.verb == "set" else dict.fromkeys(args.keys)
    with ControlClient(args.socket) as client:
        result = client.call("config.set", settings=settings)
    if args.json:
        print(to_json(result))
        return 0
    lines = [f"run-time settings: {to_json(result['settings'])}",
             f"changed sections: {', '.join(result['changed']) or 'none'}"]
    if result["shadowed_by_environment"]:
        lines.append("overridden by environment variables: " + ", ".join(result["shadowed_by_environment"]))
    print("\n".join(lines))
    return 0
