"""The monitor stream inside the camera process: its settings from ``start``, its server, its ops.

The daemon sends ``monitor`` (the ``MonitorSettings`` fields, password included: stdin, never a command
line) with ``start``; once the capture runs, :meth:`MonitorOps.start` serves the hub's frames over RTSP.
GStreamer is imported only then: a unit without the monitor never loads it. While anyone watches, the
capture is held active (``Activity.hold("monitor")``: continuous full frames); unwatched, it idles.

Ops (requests, one ``reply`` each): ``monitor.issue`` (purpose, cap) -> the grant (URL, expiry),
``monitor.revoke`` (id), ``monitor.viewers`` -> viewers with their quality, the encoder's rates and where
frames stop (``pipeline``: frames pushed and encoded, packets sent, the stall watchdog's counts).
A server that cannot start (port taken, an element missing) is a ``monitor`` event with ``state: fault``
and the reason: the daemon shows it in ``status`` and logs it, never a silently missing stream.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from doorphoned.camera import protocol

if TYPE_CHECKING:
    from doorphoned.camera.capture import Activity
    from doorphoned.camera.hub import FrameHub
    from doorphoned.camera.monitor import MonitorServer, MonitorSettings

log = logging.getLogger("doorphoned.camera.monitor_ops")
HOLDER = "monitor"
_INT_FIELDS = {"port": (0, 65535), "width": (64, 4096), "height": (64, 4096), "fps": (1, 60),
               "bitrate_kbps": (16, 100_000), "max_viewers": (1, 64), "session_cap_seconds": (1, 86400),
               "max_cap_seconds": (1, 86400), "installer_cap_seconds": (0, 86400),
               "grant_ttl_seconds": (1, 86400), "setup_seconds": (1, 3600), "encoder_nice": (0, 19)}
_TEXT_FIELDS = ("host", "public_host", "user", "password")
Emit = Callable[..., None]


def parse_settings(value: object) -> dict[str, Any]:
    """The ``monitor`` field of ``start``, checked field by field (a wrong one refuses the start)."""
    if not isinstance(value, dict):
        raise protocol.ProtocolError("monitor must be an object")
    unknown = set(value) - set(_INT_FIELDS) - set(_TEXT_FIELDS)
    if unknown:
        raise protocol.ProtocolError(f"monitor: unknown field {sorted(unknown)[0][:40]!r}")
    fields: dict[str, Any] = {}
    for key, (low, high) in _INT_FIELDS.items():
        if key in value:
            fields[key] = int(protocol.number(value, key, low, low, high))
    for key in _TEXT_FIELDS:
        if key in value:
            fields[key] = protocol.text(value, key, limit=256)
    if fields.get("width", 2) % 2 or fields.get("height", 2) % 2:
        raise protocol.ProtocolError("monitor: width and height must be even")
    return fields


class MonitorOps:
    """The process's monitor: configured by ``start``, started after the capture, answering its ops."""

    def __init__(self, hub: FrameHub, activity: Activity, emit: Emit) -> None:
        self.hub, self.activity, self.emit = hub, activity, emit
        self.fields: dict[str, Any] | None = None
        self.server: MonitorServer | None = None
        self.error = ""

    def register(self, ops: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]]) -> None:
        ops.update({"monitor.issue": self.op_issue, "monitor.revoke": self.op_revoke,
                    "monitor.viewers": self.op_viewers})

    def configure(self, message: dict[str, Any]) -> None:
        """Read ``start``'s ``monitor`` field (absent: the monitor is off)."""
        if "monitor" in message:
            self.fields = parse_settings(message["monitor"])

    def start(self) -> None:
        """Serve the stream (called once the capture is built); a failure is reported, not raised."""
        if self.fields is None:
            return
        try:
            from doorphoned.camera.monitor import MonitorServer, MonitorSettings
            settings: MonitorSettings = dataclasses.replace(MonitorSettings(), **self.fields)
            server = MonitorServer(self.hub, settings)
            server.on_viewers = self._on_viewers
            server.on_streaming = self._on_streaming
            server.start()
        except Exception as exc:  # MonitorError, ImportError (no PyGObject), a GLib error: all loud
            self.error = f"monitor stream not started: {exc}"[:300]
            log.error("%s", self.error)
            self.emit("monitor", state="fault", message=self.error)
            return
        self.server = server
        self.emit("monitor", state="ok", port=server.port)

    def _on_streaming(self, active: bool) -> None:
        """The encoder needs continuous frames from a viewer's SETUP on (its media prerolls on the first
        one: an idle camera publishing nothing would stall the PLAY) until the last viewer left."""
        self.activity.hold(HOLDER, active)

    def _on_viewers(self, count: int) -> None:
        server = self.server
        encoder = server.encoder_stats() if server is not None else {}
        self.emit("monitor_viewers", count=count, encoder=encoder)

    def _running(self) -> MonitorServer:
        if self.server is None:
            raise protocol.ProtocolError(self.error or "the monitor stream is not enabled")
        return self.server

    def op_issue(self, message: dict[str, Any]) -> dict[str, Any]:
        from doorphoned.camera.monitor import MonitorError
        from doorphoned.camera.monitor_auth import AccessError
        server = self._running()
        purpose = protocol.text(message, "purpose", limit=64)
        cap = message.get("cap")
        if cap is not None:
            cap = int(protocol.number(message, "cap", 1, 1, 86400))
        try:
            grant = server.issue_session(purpose, cap)
        except (AccessError, MonitorError) as exc:
            raise protocol.ProtocolError(str(exc)) from None
        return {"grant": grant.public()}

    def op_revoke(self, message: dict[str, Any]) -> dict[str, Any]:
        from doorphoned.camera.monitor import MonitorError
        grant_id = protocol.text(message, "id", limit=64)
        try:
            revoked = self._running().revoke(grant_id)
        except MonitorError as exc:
            raise protocol.ProtocolError(str(exc)) from None
        return {"revoked": revoked}

    def op_viewers(self, message: dict[str, Any]) -> dict[str, Any]:
        from doorphoned.camera.monitor import MonitorError
        server = self._running()
        try:
            return {"viewers": server.viewers(), "encoder": server.encoder_stats(), "port": server.port,
                    "max_viewers": server.settings.max_viewers, "pipeline": server.pipeline_stats()}
        except MonitorError as exc:
            raise protocol.ProtocolError(str(exc)) from None
