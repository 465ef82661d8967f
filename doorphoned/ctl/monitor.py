"""``doorphonectl monitor status``: the live monitor stream, its viewers with their quality, the encoder."""

from __future__ import annotations

from typing import Any

from doorphoned.ctl.registry import Registry, remote

QUALITY = ("fps", "bitrate_bps", "packet_loss", "packets_lost", "rtt_ms", "jitter")


def register(cli: Registry) -> None:
    cli.group("monitor", "the live monitor stream (RTSP)")
    cli.command("monitor status", "viewers with their quality, the encoder's fps and bitrate",
                remote("monitor.status", fmt_status))


def fmt_status(status: dict[str, Any]) -> str:
    """One line for the stream, one per viewer (no credential: the daemon sends none)."""
    if status["state"] != "ok":
        return f"monitor: {status['state'].upper()} {status.get('error', '')}".rstrip()
    encoder = status.get("encoder") or {}
    lines = [f"monitor: port {status['port']}, {len(status['viewers'])}/{status.get('max_viewers')} viewers, "
             f"encoder {encoder.get('fps', 0)} fps {int(encoder.get('bitrate_bps', 0)) // 1000} kbit/s"]
    pipeline = status.get("pipeline") or {}
    if pipeline:
        lines.append(f"  pipeline: {pipeline.get('frames_pushed')} frames pushed, {pipeline.get('frames_encoded')} "
                     f"encoded, {pipeline.get('packets_sent')} packets sent ({pipeline.get('packets_per_second')}/s), "
                     f"stalls {pipeline.get('stalls')}, restarts {pipeline.get('restarts')}")
    for v in status["viewers"]:
        quality = ", ".join(f"{k} {v[k]}" for k in QUALITY if v.get(k) is not None)
        lines.append(f"  viewer {v.get('id')} {v.get('purpose')} from {v.get('remote')} over {v.get('transport')}"
                     + (f": {quality}" if quality else " (no receiver report yet)"))
    return "\n".join(lines)
