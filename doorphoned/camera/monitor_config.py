"""The live monitor stream's section (``[monitor]``): the RTSP server the camera process hosts.

Mapped to :class:`camera.monitor.MonitorSettings` by :func:`monitor_settings`; this module imports no
GStreamer (the daemon loads it at every start, monitor enabled or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doorphoned.core.config import ConfigError, Source, setting


def check_size(value: str) -> str | None:
    """``WxH``, both even and 64..4096 (what x264 and the stamp accept)."""
    width, _, height = value.partition("x")
    if not (width.isdigit() and height.isdigit()) or not all(
            64 <= int(v) <= 4096 and int(v) % 2 == 0 for v in (width, height)):
        return "must be WxH with even numbers from 64 to 4096 (e.g. 640x480)"
    return None


def check_host(value: str) -> str | None:
    if len(value) > 253 or not all(c.isalnum() or c in ".-:[]" for c in value):
        return "must be a host name or an IP address"
    return None


def check_user(value: str) -> str | None:
    if not 1 <= len(value) <= 64 or not all(c.isalnum() or c in "._-" for c in value):
        return "must be 1-64 letters, digits, '.', '_' or '-'"
    return None


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = setting(False, doc="Serve the live camera picture over RTSP at `/live/ch00_0` (needs "
                            "`[camera] enabled`; loads GStreamer in the camera process only when true).")
    host: str = setting("0.0.0.0", doc="Address the RTSP server listens on.", check=check_host)
    port: int = setting(8554, doc="RTSP port. On the hardware unit 554 (the systemd unit grants "
                        "`CAP_NET_BIND_SERVICE`); 8554 in `--sim` and development.", min=1, max=65535)
    public_host: str = setting("", doc="Host put into the one-time URLs handed to the app and to callees "
                               "(the unit's address as they reach it); empty = this unit's primary address.",
                               check=lambda v: check_host(v) if v else None)
    resolution: str = setting("640x480", doc="Size of the encoded picture (`WxH`; frames are scaled).",
                              check=check_size)
    fps: int = setting(15, doc="Frame rate of the encoded stream.", min=1, max=30)
    bitrate_kbps: int = setting(1000, doc="H.264 bit rate in kbit/s.", min=64, max=20000)
    user: str = setting("installer", doc="User name of the installer's stream account (digest auth).",
                        check=check_user)
    password: str = setting("", doc="Password of the installer's stream account; empty = no installer "
                            "account (one-time URLs only). Never logged or shown.", secret=True)
    max_viewers: int = setting(4, doc="Viewers at once; the next is refused (RTSP 503).", min=1, max=16)
    session_cap: int = setting(180, doc="Seconds a one-time session (cloud `monitor.start`) lasts at most "
                               "unless the command asks for less.", min=5, max=3600)
    max_cap: int = setting(3600, doc="Longest cap a `monitor.start` may ask for, in seconds.", min=5, max=86400)
    call_cap: int = setting(300, doc="Cap in seconds of a callee's session during a call (the grant is also "
                            "revoked when the call ends).", min=5, max=3600)
    installer_cap: int = setting(0, doc="Seconds an installer-account session lasts at most; 0 = no cap.",
                                 min=0, max=86400)
    grant_ttl: int = setting(60, doc="Seconds a one-time URL waits for its viewer before it dies unused.",
                             min=5, max=3600)
    setup_seconds: int = setting(15, doc="Seconds a connection may take to start a session before it is "
                                 "closed (a flood of idle connections drains).", min=1, max=300)
    encoder_nice: int = setting(10, doc="Nice value of the stream's encoding and sending threads (GStreamer's "
                                "streaming threads and x264's workers): higher lets QR decoding and the doors "
                                "take the CPU first while someone watches; 0 = the same priority as the rest.",
                                min=0, max=19)

    def validate(self, camera_enabled: bool, source: Source) -> None:
        if self.enabled and not camera_enabled:
            raise ConfigError("monitor.enabled", "monitor is enabled but [camera] is not",
                              source.where("monitor.enabled"))
        if self.session_cap > self.max_cap:
            raise ConfigError("monitor.session_cap", "session_cap is longer than max_cap",
                              source.where("monitor.session_cap"))

    @property
    def size(self) -> tuple[int, int]:
        width, _, height = self.resolution.partition("x")
        return int(width), int(height)


def monitor_settings(config: MonitorConfig, public_host: str) -> dict[str, Any]:
    """The fields of ``MonitorSettings`` as plain JSON (they travel to the camera process on its stdin:
    the password never appears on a command line)."""
    width, height = config.size
    return {"host": config.host, "port": config.port, "public_host": public_host, "width": width,
            "height": height, "fps": config.fps, "bitrate_kbps": config.bitrate_kbps, "user": config.user,
            "password": config.password, "max_viewers": config.max_viewers,
            "session_cap_seconds": config.session_cap, "max_cap_seconds": config.max_cap,
            "installer_cap_seconds": config.installer_cap, "grant_ttl_seconds": config.grant_ttl,
            "setup_seconds": config.setup_seconds, "encoder_nice": config.encoder_nice}


def unit_address() -> str:
    """This unit's primary IPv4 address (the source address of a route out), 127.0.0.1 without a network."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent by a UDP connect
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
