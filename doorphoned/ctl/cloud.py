"""``doorphonectl cloud status``: the MQTT link to the cloud."""

from __future__ import annotations

from typing import Any

from doorphoned.ctl.registry import Registry, remote


def register(cli: Registry) -> None:
    """Register the cloud verbs."""
    cli.group("cloud", "the cloud link")
    cli.command("cloud status", "connection, last error, outbox depth", remote("cloud.status", fmt_cloud))


def fmt_cloud(c: dict[str, Any]) -> str:
    """Link state, outbox and commands handled; how to switch it on when it is off."""
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
