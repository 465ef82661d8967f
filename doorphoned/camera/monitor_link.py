"""The daemon's side of the monitor stream: its state from the camera process's events, and the grants.

:class:`MonitorLink` is attached to the :class:`CameraFeature` when ``[monitor]`` is enabled. It hands the
stream's settings to the process with ``start``, turns the ``monitor`` event into the stream's state
(a server that could not start is logged as an error and shown in ``status``), counts viewers from
``monitor_viewers``, and implements ``core.ports.MonitorGrants`` (issue / revoke) with camera requests,
so that the SIP and cloud features hand out one-time URLs without importing ``camera/``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from doorphoned.camera import protocol
from doorphoned.core.events import MonitorChanged
from doorphoned.core.ports import MonitorGrant

if TYPE_CHECKING:
    from doorphoned.camera.feature import CameraFeature

log = logging.getLogger("doorphoned.camera.monitor")


class MonitorError(RuntimeError):
    """A monitor request that did not do what it asked (no stream, refused, no reply): the reason."""


class MonitorLink:
    """The stream as the daemon sees it; ``settings`` are the ``MonitorSettings`` fields (secret inside)."""

    def __init__(self, camera: CameraFeature, settings: dict[str, Any], call_cap: int | None = None) -> None:
        self.camera = camera
        self.settings = settings
        self.call_cap = call_cap  # the cap of a callee's session (purpose "call") when the caller names none
        self.state = "starting"
        self.error = ""
        self.port: int | None = None
        self.viewer_count = 0
        self.encoder: dict[str, Any] = {"fps": 0.0, "bitrate_bps": 0}  # at the last change of viewers
        camera.monitor = self
        camera.add_events({"monitor": self._on_monitor, "monitor_viewers": self._on_viewers})

    def start_fields(self) -> dict[str, Any]:
        """What ``start`` carries for the process (the password travels on its stdin only)."""
        return {"monitor": self.settings}

    def _on_monitor(self, message: dict[str, Any]) -> None:
        if message.get("state") == "ok":
            with contextlib.suppress(protocol.ProtocolError):
                self.port = int(protocol.number(message, "port", 0, 0, 65535))
            self.state, self.error = "ok", ""
            log.log(25, "monitor stream ready on port %s", self.port)
        else:
            self.state = "fault"
            self.error = str(message.get("message", "monitor stream failed"))[:300]
            log.error("monitor fault: %s", self.error)
        self._changed()

    def _changed(self) -> None:
        self.camera.bus.publish(MonitorChanged(self.camera.clock.now(), self.state, self.viewer_count))

    def _on_viewers(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(protocol.ProtocolError):
            self.viewer_count = int(protocol.number(message, "count", 0, 0, 1000))
        encoder = message.get("encoder")
        if isinstance(encoder, dict):
            with contextlib.suppress(protocol.ProtocolError):
                self.encoder = {"fps": protocol.number(encoder, "fps", 0, 0, 1000),
                                "bitrate_bps": int(protocol.number(encoder, "bitrate_bps", 0, 0, 1e10))}
        self._changed()

    def process_ended(self) -> None:
        self.state, self.port, self.viewer_count = "starting", None, 0

    async def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        from doorphoned.camera.feature import CameraError
        if self.state != "ok":
            raise MonitorError(f"the monitor stream is not running ({self.error or self.state})")
        try:
            return await self.camera.request(op, **fields)
        except CameraError as exc:
            raise MonitorError(str(exc)) from None

    async def issue(self, purpose: str, cap: int | None = None) -> MonitorGrant:
        """A one-time URL for one session of at most ``cap`` seconds (the configured cap when None)."""
        if cap is None and purpose == "call":
            cap = self.call_cap
        fields: dict[str, Any] = {"purpose": purpose} if cap is None else {"purpose": purpose, "cap": cap}
        grant = (await self._request("monitor.issue", **fields)).get("grant")
        if not isinstance(grant, dict):
            raise MonitorError("camera monitor.issue: reply without a grant")
        try:
            return MonitorGrant(id=str(grant["id"]), url=str(grant["url"]), expires=float(grant["expires"]),
                                cap_seconds=int(grant["cap_seconds"]))
        except (KeyError, TypeError, ValueError):
            raise MonitorError("camera monitor.issue: malformed grant") from None

    async def revoke(self, grant_id: str) -> bool:
        """End a grant and any session using it; False when it was no longer live."""
        return (await self._request("monitor.revoke", id=grant_id)).get("revoked") is True

    async def viewers(self) -> dict[str, Any]:
        """Viewers with their quality and the encoder's fps/bitrate (the process's figures now)."""
        reply = await self._request("monitor.viewers")
        return {"viewers": reply.get("viewers", []), "encoder": reply.get("encoder", {}),
                "port": reply.get("port"), "max_viewers": reply.get("max_viewers"),
                "pipeline": reply.get("pipeline", {})}

    def cloud_state(self) -> dict[str, Any]:
        """The ``monitor`` part of the cloud's retained state: short, no address, no secret."""
        return {"state": self.state, "viewers": self.viewer_count, "encoder": self.encoder}

    def summary(self) -> dict[str, Any]:
        """The stream in ``status`` (no secret: no password, no grant URL)."""
        return {"state": self.state, "error": self.error, "port": self.port, "viewers": self.viewer_count,
                "public_host": self.settings.get("public_host", "")}
