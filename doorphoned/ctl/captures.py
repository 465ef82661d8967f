"""``doorphonectl capture`` and ``log captures``: camera snapshots and the list of those kept."""

from __future__ import annotations

from typing import Any

from doorphoned.ctl.registry import Registry, arg, local_time, remote

TRIGGERS = ["manual", "call", "granted", "refused", "forced_open", "motion", "package"]


def register(cli: Registry) -> None:
    """Register the capture verbs; the ``log`` group itself is declared by :mod:`doorphoned.ctl.system`."""
    cli.command("capture", "take a camera capture now (JPEG kept under the state folder)",
                remote("capture", fmt_capture, "door"), arg("--door", type=int))
    cli.command("log captures", "captures kept: time, trigger, door, related log entry, size",
                remote("log.captures", fmt_captures, "limit", "trigger"),
                arg("--limit", type=int, default=50), arg("--trigger", choices=TRIGGERS))


def fmt_capture(r: dict[str, Any]) -> str:
    door = f" of door {r['door']}" if r["door"] is not None else ""
    return f"capture #{r['id']}{door} taken {local_time(r['ts'])}: {r['width']}x{r['height']}, {r['size']} bytes"


def fmt_captures(entries: list[dict[str, Any]]) -> str:
    """Oldest first (the daemon sends newest first)."""
    lines = []
    for e in reversed(entries):
        door = "-" if e["door"] is None else e["door"]
        entry = "-" if e["log_id"] is None else f"#{e['log_id']}"
        lines.append(f"{local_time(e['ts'])}  #{e['id']:<6} {e['trigger']:<11} door {door:<3} log {entry:<8} "
                     f"{e['size']} bytes")
    return "\n".join(lines) or "no captures"
