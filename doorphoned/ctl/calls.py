"""``doorphonectl call``, ``hangup`` and ``log calls``: SIP calls and their history."""

from __future__ import annotations

from typing import Any

from doorphoned.ctl.registry import Registry, arg, local_time, remote

CALL_TYPES = ["outgoing", "incoming", "missed", "forwarded"]


def register(cli: Registry) -> None:
    """Register the call verbs; the ``log`` group itself is declared by :mod:`doorphoned.ctl.system`."""
    cli.command("log calls", "call history: outgoing, incoming, missed, forwarded",
                remote("log.calls", fmt_calls, "limit", "type"),
                arg("--limit", type=int, default=50), arg("--type", choices=CALL_TYPES))
    cli.command("call", "call a target (id or name) or a sip: URI", remote("call", _call_text, "target"),
                arg("target"))
    cli.command("hangup", "end every call, ringing or answered",
                remote("hangup", lambda r: f"{r['calls_ended']} call(s) ended"))


def fmt_sip(sip: dict[str, Any]) -> str:
    """The ``sip:`` line of ``status``: listening address, registration, calls, refusals, restarts."""
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
    """The call history, oldest first (the daemon sends newest first)."""
    lines = []
    for e in reversed(entries):
        who = e["peer"] or e["target"]
        opened = f", opened door {','.join(map(str, e['opened']))}" if e["opened"] else ""
        codec = f", {e['quality']['codec']}" if e["quality"].get("codec") else ""
        lines.append(f"{local_time(e['started'])}  #{e['id']:<6} {e['type']:<9} {who} "
                     f"({e['reason']}), {e['duration_s']:.1f} s{opened}{codec}{_extras(e)}")
    return "\n".join(lines) or "no calls"


def _extras(entry: dict[str, Any]) -> str:
    """Capture and video of a call, when it had them (entries from before they were recorded have neither)."""
    text = f", capture {entry['capture_id']}" if entry.get("capture_id") is not None else ""
    video = entry.get("video")
    if isinstance(video, dict):
        fps, loss, rtt = video.get("fps"), video.get("packet_loss"), video.get("rtt_ms")
        text += (f", video {fps} fps, loss {loss}, rtt {rtt} ms" if video.get("rtcp")
                 else ", video watched (no RTCP reports)")
    return text


def _call_text(r: dict[str, Any]) -> str:
    if not r["called"]:
        return f"{r['target']}: not called ({r['reason']})"
    return f"calling {r['target']}: " + " then ".join(" + ".join(w) for w in r["waves"])
