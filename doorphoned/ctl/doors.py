"""``doorphonectl relay ...`` and ``log doors``: the doors, their locks and the door log."""

from __future__ import annotations

import argparse
from typing import Any

from doorphoned.ctl.registry import Registry, arg, local_time, remote

DOOR_LOG_KINDS = ["access", "door_status", "alarm", "lock_fault", "relay_test", "motion", "package"]


def register(cli: Registry) -> None:
    """Register the door verbs; the ``log`` group itself is declared by :mod:`doorphoned.ctl.system`."""
    cli.group("relay", "doors and their locks")
    cli.command("relay list", "configured doors and lock states", remote("relay.list", fmt_relays))
    cli.command("relay open", "open a door now (logged as installer)", remote("relay.open", _open_done, "door"),
                arg("door", type=int))
    cli.command("relay test", "pulse each lock in turn and read every input",
                remote("relay.test", fmt_test, "pulse_ms"),
                arg("--pulse-ms", type=int, default=None, help="test pulse length (default 1000)"))
    cli.command("log doors", "access decisions, door status, alarms",
                remote("log.doors", fmt_log, "limit", "door", "kind"),
                arg("--limit", type=int, default=50), arg("--door", type=int), arg("--kind", choices=DOOR_LOG_KINDS))


def fmt_relays(doors: list[dict[str, Any]]) -> str:
    """One line a door: name, relay state, door sensor, lock and where it is wired, mode, alarms."""
    lines = []
    for d in doors:
        drv = d["driver"]
        where = f"GPIO{drv['pin']}" if drv["driver"] == "relay" else drv.get("url", "")
        alarms = f"  ALARM: {', '.join(d['alarms'])}" if d["alarms"] else ""
        alarms += f"  FAULT: {d['fault']}" if d.get("fault") else ""
        lines.append(f"{d['door']}: {d['name'] or '(unnamed)'} - {d['state']}, door {d['door_status']}, "
                     f"{d['lock']} {where}, {d['mode']} {d['hold_time']:g} s{alarms}")
    return "\n".join(lines) or "no doors configured"


def _open_done(result: dict[str, Any]) -> str:
    return f"door {result['door']} opened"


def fmt_test(results: list[dict[str, Any]]) -> str:
    """``relay test``: each door's pulse and inputs, then the tamper input."""
    lines = []
    for r in results:
        if "door" in r:
            lines.append(f"door {r['door']} ({r['lock']}): pulse {r['pulse']}, locked again: "
                         f"{'yes' if r['locked_again'] else 'NO'}, sensor {r['sensor'] or 'none'}, "
                         f"exit button {r['exit_button'] or 'none'}")
        else:
            lines.append(f"tamper: {r['tamper'] or 'none'}")
    return "\n".join(lines)


def fmt_log(entries: list[dict[str, Any]]) -> str:
    """The door log, oldest first (the daemon sends newest first)."""
    lines = []
    for e in reversed(entries):
        door = f"door {e['door']}" if e["door"] is not None else "unit"
        lines.append(f"{local_time(e['ts'])}  #{e['id']:<6} {door:<7} {_log_what(e)}")
    return "\n".join(lines) or "no entries"


def _log_what(e: dict[str, Any]) -> str:
    """What a door-log entry says, by its kind."""
    if e["kind"] == "access":
        what = f"{'GRANTED' if e['granted'] else 'DENIED '} {e['credential']} ({e['subject']}): {e['reason']}"
        if e["detail"].get("detail"):  # why a refusal; "opened during call with ..." for DTMF
            what += f" - {e['detail']['detail']}"
        if e["detail"].get("count"):  # repeated refusals folded into this entry
            what += f" (x{e['detail']['count']}, last {local_time(e['detail']['last'])})"
        return what
    if e["kind"] == "alarm":
        return f"ALARM {e['reason']} {'raised' if e['detail'].get('active') else 'cleared'}"
    if e["kind"] == "lock_fault":
        return f"LOCK FAULT {e['reason']}: {e['detail'].get('detail', '')}"
    return f"{e['kind']} {e['reason']}"


def doors_arg(text: str) -> list[int] | str:
    """A ``--doors`` value: ``all`` or door numbers 1-16 separated by commas."""
    if text.strip().lower() == "all":
        return "all"
    try:
        doors = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"doors must be numbers like 1,2 (got {text!r})") from None
    if not doors or any(not 1 <= d <= 16 for d in doors):
        raise argparse.ArgumentTypeError("doors are numbers 1-16, e.g. 1,2")
    return doors
