"""``doorphonectl status``, ``doctor`` and ``log level``: the daemon as a whole."""

from __future__ import annotations

import argparse
from typing import Any

from doorphoned.control.client import ControlClient
from doorphoned.ctl.calls import fmt_sip
from doorphoned.ctl.doors import fmt_relays
from doorphoned.ctl.registry import Registry, arg, remote, show

EXIT_DOCTOR_FAILED = 2
"""``doctor`` ran and at least one check failed (1 is kept for "could not ask the daemon")."""


def register(cli: Registry) -> None:
    """Register the daemon-wide verbs and declare the ``log`` group the door and call modules add to."""
    cli.command("status", "daemon, features, doors", remote("status", fmt_status))
    cli.command("doctor", "self-test of everything configured", _doctor)
    cli.group("log", "door log, call history, log level")
    cli.command("log level", "show or set the log level (1-7, default 3)", remote("log.level", _level_text, "level"),
                arg("level", type=int, nargs="?", choices=range(1, 8), metavar="1-7"))


def fmt_status(s: dict[str, Any]) -> str:
    """``status``: the daemon, its features, doors, SIP, store and credential counts."""
    lines = [f"doorphoned {s['version']} (pid {s['pid']}), up {s['uptime_s']:.0f} s, site {s['site']!r} "
             f"[{s['timezone']}], log level {s['log_level']}", f"config: {s['config_source']}", "features:"]
    lines += [_feature_line(f) for f in s["features"]]
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
    phones = f", {c['phone_keys']} phone keys" if "phone_keys" in c else ""
    lines.append(f"credentials: {c['users']} users ({c['private_pins']} with a PIN, {c['cards']} cards{phones}), "
                 f"{c['temp_keys']} temp keys")
    if s.get("unit"):
        lines.append(f"unit: id {s['unit']['id']} (its public key, for phones: status --json)")
    return "\n".join(lines)


def _feature_line(f: dict[str, Any]) -> str:
    """A feature's state, error, reader, restarts and lost hardware, on one line."""
    reader = f"  reader {f['reader']}" + (f": {f['reader_error']}" if f.get("reader_error") else "") \
        if "reader" in f else ""
    lost = f"  hardware {f['hardware']}" if f.get("hardware_connected") is False else ""
    restarts = f"  ({f['restarts']} restarts)" if f.get("restarts") else ""
    return (f"  {f['name']:<10} {f['state']}{'  ' + f['error'] if f['error'] else ''}{reader}{_camera(f)}"
            f"{restarts}{lost}")


def _camera(f: dict[str, Any]) -> str:
    """The camera feature's process state, capture kind and whether it is analysing frames now."""
    if "camera" not in f or "capture" not in f:
        return ""
    error = f": {f['camera_error']}" if f.get("camera_error") else ""
    doing = "analysing" if f.get("active") else "idle"
    return f"  camera {f['camera']}{error}" + (f" ({f['capture']}, {doing})" if f["camera"] == "ok" else "")


def fmt_doctor(results: list[dict[str, str]]) -> str:
    """One line a check, marked ok, WARN or FAIL."""
    marks = {"ok": "  ok ", "warn": " WARN", "fail": " FAIL"}
    return "\n".join(f"{marks[r['state']]}  {r['check']}: {r['detail']}" for r in results)


def _doctor(args: argparse.Namespace) -> int:
    """Run the daemon's self-test; a failed check is exit status 2 so scripts can tell it from no answer."""
    with ControlClient(args.socket) as client:
        results = client.call("doctor")
    show(args, results, fmt_doctor)
    return EXIT_DOCTOR_FAILED if any(r["state"] == "fail" for r in results) else 0


def _level_text(result: dict[str, Any]) -> str:
    return f"log level {result['level']} ({result['name']})"
