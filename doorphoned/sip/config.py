"""The SIP section: the stack, call targets and call buttons (``[sip]``, ``[[sip.targets]]``, ``[[sip.buttons]]``).

The DTMF code that opens a door is a door's key (``doors.dtmf_code``, relay/config.py); the SIP
feature reads it through :class:`SipSections` without importing the doors' section.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from doorphoned.core.config import ConfigError, Level, Source, setting


def _check_sip_uri(value: str) -> str | None:
    if value and not re.match(r"^sips?:[^\s]+$", value):
        return f"must be a SIP URI like sip:101@192.168.1.20, got {value!r}"
    return None


def _check_sip_uris(values: tuple[str, ...]) -> str | None:
    return next((p for p in map(_check_sip_uri, values) if p), None)


def _check_windows(values: tuple[str, ...]) -> str | None:
    from doorphoned.core.schedule import ScheduleError, WeeklyWindow

    for text in values:
        try:
            WeeklyWindow.parse(text)
        except ScheduleError as exc:
            return str(exc)
    return None


def _check_codecs(values: tuple[str, ...]) -> str | None:
    unknown = [c for c in values if c.upper() not in {"PCMU", "PCMA", "G722", "GSM", "SPEEX", "ILBC"}]
    return f"unknown codec {unknown[0]!r} (PCMU, PCMA, G722, GSM, SPEEX, ILBC)" if unknown else None


@dataclass(frozen=True)
class CallTargetConfig:
    id: int = setting(doc="Number of this call target (`doorphonectl call 1`, call buttons' `target`).",
                      min=1, max=999)
    name: str = setting("", doc="Who is called (an apartment, a person); `doorphonectl call NAME` works too.")
    preference: Literal["app", "phone", "app_then_phone"] = setting(
        "app", doc="`app`: app accounts + indoor monitors ring together; `phone`: landline + monitors; "
        "`app_then_phone`: app + monitors, then the landline after `sip.ring_timeout`.")
    app: tuple[str, ...] = setting([], doc="SIP URIs of the app accounts.", check=_check_sip_uris)
    monitors: tuple[str, ...] = setting([], doc="SIP URIs of indoor monitors (peer to peer: `sip:monitor@IP`).",
                                        check=_check_sip_uris)
    phone: str = setting("", doc="SIP URI of the landline (through the registrar/trunk).", check=_check_sip_uri)
    intercom: bool = setting(True, doc="Intercom permission: false = this target is never called.")
    dnd: tuple[str, ...] = setting([], doc="Do-not-disturb windows (`mon-fri 22:00-07:00`): no ringing, the call "
                                   "is logged as missed (dnd).", check=_check_windows)


@dataclass(frozen=True)
class CallButtonConfig:
    id: int = setting(doc="Call button number (`hwsim button call N`).", min=1, max=16)
    pin: int = setting(doc="GPIO of the call button.", min=0, max=53)
    target: int = setting(doc="Call target id this button calls.", min=1, max=999)
    pressed_level: Level = setting("low", doc="Pin level while pressed.")


@dataclass(frozen=True)
class SipConfig:
    enabled: bool = setting(False, doc="Run the SIP stack (pjsua2): calls, DTMF door open, call history.")
    bind: str = setting("0.0.0.0", doc="Address the SIP and RTP sockets bind to.")
    port: int = setting(5060, doc="SIP port (UDP, and TCP when `tcp`).", min=1, max=65535)
    tcp: bool = setting(True, doc="Also listen on TCP.")
    tls_port: int = setting(0, doc="SIP over TLS on this port; 0 = no TLS. Needs `tls_cert` and `tls_key`.",
                            min=0, max=65535)
    tls_cert: str = setting("", doc="Certificate (PEM) the TLS transport presents.")
    tls_key: str = setting("", doc="Private key (PEM) of `tls_cert`.")
    public_address: str = setting("", doc="Address put in Contact/SDP when behind NAT; empty = the bound one.")
    rtp_port: int = setting(4000, doc="First RTP port tried (RTP/RTCP pairs upwards).", min=1024, max=65000)
    tcp_max_connections: int = setting(
        6, doc="Incoming SIP TCP/TLS connections from others than allowed peers open at once; past it new ones "
        "wait (their SYNs are dropped) and the newest are closed. pjlib has 64 socket handles for SIP, RTP and "
        "these together (16 let the raw SIP fuzz abort the SIP process; docs/sip.md).", min=1, max=24)
    tcp_max_per_source: int = setting(4, doc="Incoming SIP TCP/TLS connections one address may hold open.",
                                      min=1, max=24)
    tcp_idle_timeout: float = setting(10.0, doc="Seconds after which an incoming TCP/TLS connection on which "
                                      "no request was answered yet is closed.", min=1, max=600)
    resolve_every: float = setting(300.0, doc="Seconds between look-ups of allowed peers given as host names "
                                   "(every 10 s while a look-up fails).", min=2, max=86400)
    null_audio: bool = setting(False, doc="Use no sound card even when one is present (benches); without a "
                               "sound card the null device is used anyway.")
    codecs: tuple[str, ...] = setting(["PCMU", "PCMA", "G722"], doc="Audio codecs in order of preference; "
                                      "others are disabled.", check=_check_codecs)
    allowed_peers: tuple[str, ...] = setting([], doc="IP addresses or host names whose calls are accepted "
                                             "(indoor monitors, the app's media server); others get 403.")
    auto_answer: bool = setting(True, doc="Answer accepted incoming calls at once (app \"call the door\", "
                                "monitor audio).")
    registrar: str = setting("", doc="SIP registrar URI (`sip:pbx.example.com`); empty = peer to peer only. "
                             "Its address is an allowed peer.", check=_check_sip_uri)
    username: str = setting("", doc="SIP account user (registration and digest authentication).")
    password: str = setting("", doc="SIP digest password; never logged or shown.", secret=True)
    realm: str = setting("*", doc="Digest realm the password is for (`*` = any).")
    reg_timeout: int = setting(300, doc="Registration expiry in seconds (re-registered before it runs out).",
                               min=30, max=86400)
    ring_timeout: float = setting(30.0, doc="Seconds a call rings before the next step (landline, or missed).",
                                  min=1, max=600)
    max_call_time: float = setting(120.0, doc="Seconds after which an answered call is hung up.", min=5, max=7200)
    rtp_timeout: float = setting(30.0, doc="Seconds without incoming RTP after which an answered call is ended; "
                                 "0 = never.", min=0, max=3600)
    hangup_after_open: bool = setting(False, doc="Hang up right after a DTMF code opened a door.")
    dtmf_max_wrong_keys: int = setting(
        12, doc="DTMF keys in one call without a matching code after which the unit stops listening and hangs "
        "up; a peer that does this 3 times in 10 minutes is not heard for 15 minutes (alarm `dtmf_lockout`).",
        min=4, max=100)
    door: int = setting(1, doc="The door this unit's call panel stands at: named in the cloud's ring event and "
                        "in the capture a ringing call takes (`captures.triggers` has `call`).", min=1, max=16)
    call_log_max: int = setting(50_000, doc="Call-history entries kept.", min=100, max=10_000_000)
    targets: tuple[CallTargetConfig, ...] = setting([], doc="One `[[sip.targets]]` table per call target.")
    buttons: tuple[CallButtonConfig, ...] = setting([], doc="One `[[sip.buttons]]` table per call button.")

    def target(self, key: str | int) -> CallTargetConfig | None:
        text = str(key)
        return next((t for t in self.targets if str(t.id) == text or (t.name and t.name == text)), None)

    def validate(self, used_pins: Collection[int | None], source: Source) -> None:
        """Call buttons name existing targets on free pins (``used_pins``: the doors' and the tamper's);
        target ids are unique; a TLS port has its certificate."""
        ids = [t.id for t in self.targets]
        for index, target in enumerate(self.targets):
            if ids.count(target.id) > 1:
                key = f"sip.targets[{index}].id"
                raise ConfigError(key, f"call target {target.id} is defined twice", source.where(key))
        used = set(used_pins)
        if self.tls_port and not (self.tls_cert and self.tls_key):
            raise ConfigError("sip.tls_cert", "a TLS port needs tls_cert and tls_key", source.where("sip.tls_port"))
        for index, button in enumerate(self.buttons):
            key = f"sip.buttons[{index}]"
            if button.target not in ids:
                raise ConfigError(f"{key}.target", f"no call target {button.target}", source.where(f"{key}.target"))
            if button.pin in used:
                raise ConfigError(f"{key}.pin", f"GPIO {button.pin} is already used", source.where(f"{key}.pin"))
            used.add(button.pin)


class DtmfDoor(Protocol):
    """A door as the SIP feature sees it: its number and the DTMF code that opens it."""

    @property
    def id(self) -> int: ...

    @property
    def dtmf_code(self) -> str: ...


class SipSections(Protocol):
    """What the SIP feature reads of the root configuration (``app/config.Config`` has these sections)."""

    @property
    def sip(self) -> SipConfig: ...

    @property
    def doors(self) -> Sequence[DtmfDoor]: ...
