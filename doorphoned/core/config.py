"""Configuration: one TOML file, validated against a typed schema, overridable from the environment.

Why a hand-made schema walk and not a validation library: installers read the errors, so every
error must name the key *and the line* (or the environment variable) it came from, and the same
schema must drive the environment overrides, ``config show`` redaction and the generated
reference in docs/configuration.md. Each setting carries its own documentation and limits as
dataclass field metadata, so adding a key is adding one line of data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from doorphoned.core.urls import redact_url

ENV_PREFIX = "DOORPHONED_"
REDACTED = "***"
DEFAULT_CONFIG_PATH = Path("/etc/doorphoned/doorphoned.toml")
# Limits far above any real configuration, so hostile files fail with a reason, not a traceback.
MAX_FILE_BYTES = 1_048_576
MAX_STRING = 65_536
MAX_NESTING = 32
_MAX_ERROR = 300

Level = Literal["high", "low"]


class ConfigError(ValueError):
    """A configuration problem, located by key path and source (line or environment variable)."""

    def __init__(self, key: str, message: str, where: str = "") -> None:
        self.key = one_line(key, 80)
        self.message = one_line(message)
        self.where = where
        located = f"{self.key} ({where})" if where else self.key
        super().__init__(f"{located}: {self.message}")


def one_line(text: str, limit: int = _MAX_ERROR) -> str:
    """Text safe for one log or terminal line: control, bidi and other invisible characters escaped
    (a key or value from a hostile file must not forge a second line or reorder the first), and cut."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                       for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    min: float | None = None,
    max: float | None = None,
    secret: bool = False,
    url: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A schema field: its default, its documentation and its limits (``url``: shown without password)."""
    meta = {"doc": doc, "min": min, "max": max, "secret": secret, "url": url, "check": check}
    if isinstance(default, (list, dict)):
        frozen = tuple(default) if isinstance(default, list) else types.MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


def _check_timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
    return None


def _check_name(value: str) -> str | None:
    if len(value) > 64 or not value.isprintable():
        return "must be printable text of at most 64 characters"
    return None


def _check_url(value: str) -> str | None:
    if not re.match(r"^https?://[^\s/]+", value):
        return f"must be an http:// or https:// URL, got {value!r}"
    return None


def _check_http_method(value: str) -> str | None:
    if value not in {"GET", "POST", "PUT", "PATCH"}:
        return "must be one of GET, POST, PUT, PATCH"
    return None


def _check_statuses(value: tuple[int, ...]) -> str | None:
    if not value or any(not 100 <= s <= 599 for s in value):
        return "must be a non-empty list of HTTP status codes (100-599)"
    return None


@dataclass(frozen=True)
class SiteConfig:
    name: str = setting("Door phone", doc="Name of this unit, shown in `status` and sent to the cloud.",
                        check=_check_name)
    timezone: str = setting(
        "UTC", doc="IANA time zone of the site; schedules and temp keys are read in it.", check=_check_timezone
    )


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = setting(
        "/var/lib/doorphoned", doc="Directory for the SQLite database and runtime files (relative = to cwd)."
    )
    log_level: int = setting(3, doc="Log detail 1-7 (1 critical only ... 3 warnings ... 7 trace).", min=1, max=7)
    door_log_max: int = setting(
        200_000, doc="Ordinary door-log entries kept (access, door status); the oldest are pruned beyond this.",
        min=1000, max=10_000_000
    )
    door_log_alarms_max: int = setting(
        200_000, doc="Alarms and lock faults kept in the door log, a budget of their own: ordinary entries never "
        "push them out.", min=1000, max=10_000_000
    )
    log_file_size: int = setting(
        1_048_576, doc="Bytes of each rotating log file `<state_dir>/log/doorphoned.log` (3 files are kept; "
        "the cloud fetches them with `log.upload`); 0 = log to stderr only.", min=0, max=64 * 1_048_576
    )


@dataclass(frozen=True)
class ControlConfig:
    socket: str = setting("", doc="Path of the doorphonectl Unix socket; empty = `<state_dir>/control.sock`.")
    group: str = setting("doorphoned", doc="Group whose members may use the control socket (root always may).")


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str = setting(
        "", doc="gpiozero pin factory by name (`lgpio`, `rpigpio`, `hwsim`, `mock`); empty = gpiozero's choice."
    )
    hwsim_socket: str = setting("", doc="hw-sim socket for `pin_factory = \"hwsim\"`; empty = `$HWSIM_SOCKET`.")


@dataclass(frozen=True)
class TamperConfig:
    pin: int | None = setting(None, doc="GPIO of the tamper switch; absent = no tamper input.", min=0, max=53)
    active_level: Level = setting("high", doc="Pin level while the housing is open (tampered).")


@dataclass(frozen=True)
class RelayConfig:
    pin: int = setting(doc="GPIO driving the relay coil (BCM numbering).", min=0, max=53)
    active_level: Level = setting("high", doc="Pin level that energises the coil (`low` for most relay boards).")
    invert: bool = setting(
        False, doc="Unlocked = relay *released* (Akuvox \"invert state\"); the safe state is then energised."
    )


@dataclass(frozen=True)
class SensorConfig:
    pin: int = setting(doc="GPIO of the door-status contact.", min=0, max=53)
    open_level: Level = setting("high", doc="Pin level while the door is open (`high`: contact to GND + pull-up).")


@dataclass(frozen=True)
class ButtonConfig:
    pin: int = setting(doc="GPIO of the exit button.", min=0, max=53)
    pressed_level: Level = setting("low", doc="Pin level while pressed (`low`: button to GND + pull-up).")


@dataclass(frozen=True)
class HttpLockConfig:
    url: str = setting(doc="URL the lock bridge opens the lock on (shown without password or query).",
                       check=_check_url, url=True)
    method: str = setting("POST", doc="HTTP method: GET, POST, PUT or PATCH.", check=_check_http_method)
    headers: Mapping[str, str] = setting(
        {}, doc="Extra request headers (e.g. Authorization); never logged or shown.", secret=True
    )
    body: str = setting(
        "", doc="Request body; `{door}` and `{hold_time}` are replaced. Never logged or shown.", secret=True
    )
    timeout: float = setting(3.0, doc="Seconds before the bridge counts as failed.", min=0.1, max=30)
    ok_status: tuple[int, ...] = setting(
        [200, 201, 202, 204], doc="HTTP statuses that mean the lock opened.", check=_check_statuses
    )
    lock_url: str = setting("", doc="Optional URL to lock again early (relock on close, bistable mode).", url=True)


def _check_dtmf_code(value: str) -> str | None:
    if value and not re.fullmatch(r"[0-9*#]{1,4}", value):
        return f"must be 1-4 keys of 0-9 * #, got {value!r}"
    return None


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
class DoorConfig:
    id: int = setting(doc="Door number 1-16, as used by `relay open N` and the cloud.", min=1, max=16)
    name: str = setting("", doc="Name shown to installers and in the logs.", check=_check_name)
    lock: Literal["relay", "http"] = setting("relay", doc="Lock driver: `relay` (GPIO) or `http` (lock bridge).")
    mode: Literal["monostable", "bistable"] = setting(
        "monostable", doc="`monostable`: unlock for hold_time; `bistable`: each grant toggles the lock."
    )
    trigger_delay: float = setting(0.0, doc="Seconds between a grant and the unlock.", min=0, max=10)
    hold_time: float = setting(3.0, doc="Seconds the lock stays unlocked (monostable).", min=1, max=10)
    relock_on_close: bool = setting(False, doc="Lock again as soon as the door closes after an opening.")
    held_open_alarm: float = setting(
        30.0, doc="Raise `held_open` when open longer than this many seconds; 0 = off.", min=0, max=86400
    )
    forced_open_grace: float = setting(
        2.0, doc="Seconds after a grant ends during which opening is not `forced_open`.", min=0, max=600
    )
    relay: RelayConfig | None = setting(None, doc="Relay wiring, required for `lock = \"relay\"`.")
    sensor: SensorConfig | None = setting(None, doc="Door-status contact; absent = no status or alarms.")
    exit_button: ButtonConfig | None = setting(None, doc="Exit button; absent = none.")
    http: HttpLockConfig | None = setting(None, doc="Lock bridge request, required for `lock = \"http\"`.")
    dtmf_code: str = setting("", doc="DTMF code (1-4 of 0-9 * #) that opens this door during a SIP call; "
                             "empty = none.", check=_check_dtmf_code)


@dataclass(frozen=True)
class AccessConfig:
    lockout_failures: int = setting(5, doc="Wrong keypad PINs within `lockout_window` that lock the keypad.",
                                    min=2, max=20)
    lockout_window: float = setting(60.0, doc="Seconds in which `lockout_failures` wrong PINs count.", min=5, max=3600)
    lockout_first: float = setting(30.0, doc="Seconds of the first lockout; each next one in a streak doubles.",
                                   min=1, max=3600)
    lockout_max: float = setting(900.0, doc="Longest lockout in seconds; as long without failures ends the streak.",
                                 min=1, max=86400)


@dataclass(frozen=True)
class KeypadConfig:
    enabled: bool = setting(False, doc="Read PINs from a serial keypad.")
    port: str = setting("", doc="Serial device of the keypad (`/dev/ttyS1`; hw-sim: its pty link).")
    baudrate: int = setting(9600, doc="Serial speed.", min=1200, max=921600)
    doors: tuple[int, ...] = setting([1], doc="Doors a PIN entered here opens (each as the PIN allows).")
    digit_timeout: float = setting(5.0, doc="Seconds without a key press that clear a half-typed entry.",
                                   min=1, max=60)
    max_length: int = setting(16, doc="Keys in one entry beyond which it is refused as too long.", min=8, max=64)


@dataclass(frozen=True)
class NfcConfig:
    enabled: bool = setting(False, doc="Read ISO 14443A card UIDs with nfcpy.")
    device: str = setting("", doc="nfcpy device: `usb`, `tty:S0:pn532`, `udp:127.0.0.1:PORT` (hw-sim).")
    doors: tuple[int, ...] = setting([1], doc="Doors a card presented here opens (each as the card's user allows).")
    repeat_delay: float = setting(2.0, doc="Seconds a card must be out of the field before it counts again; a card "
                                  "held on the reader is one presentation however long it stays.", min=0, max=60)


@dataclass(frozen=True)
class CameraConfig:
    enabled: bool = setting(False, doc="Capture frames from the camera (QR codes now; faces and monitor later).")
    source: str = setting("", doc="Camera source: an `http://` MJPEG URL, an `rtsp://` URL, a V4L2 device index "
                          "or `/dev/videoN`; "
                          "a password in the URL is never shown.", url=True)
    qr_doors: tuple[int, ...] = setting([1], doc="Doors a temp-key QR code shown here opens.")
    qr_cooldown: float = setting(1.0, doc="Seconds a QR code must be out of view before it counts again; a code "
                                 "left in view is one presentation however long it stays.", min=0, max=600)
    capture: Literal["auto", "mjpeg", "opencv"] = setting(
        "auto", doc="How frames are read: `mjpeg` reads an `http://` MJPEG stream itself (an idle camera costs "
        "almost nothing: unchanged frames are never fully decoded); `opencv` uses OpenCV/FFmpeg (RTSP, V4L2 "
        "device, any URL; every frame is decoded); `auto` = `mjpeg` for `http://` sources, else `opencv`.")
    fps: int = setting(15, doc="Frame rate asked of a V4L2 device (`source` = index or `/dev/videoN`); network "
                       "cameras send their own rate.", min=1, max=60)
    active_seconds: float = setting(3.0, doc="After the picture changed, seconds of full frames analysed "
                                    "(QR, motion) before the camera idles again.", min=0.5, max=600)
    change_fraction: float = setting(0.01, doc="Idle change detector: the share of the 80x60 greyscale picture "
                                     "that must change for the camera to wake (0.01 = 48 pixels, a hand or a "
                                     "phone; sensor noise and slow light changes stay below).", min=0.0, max=1.0)
    change_delta: int = setting(16, doc="Idle change detector: grey levels (0-255) a pixel of the small picture "
                                "must move by to count as changed.", min=1, max=255)
    wake_on_door: float = setting(5.0, doc="Seconds of full-frame analysis when a door opens (its sensor); "
                                  "0 = a door opening does not wake the camera.", min=0, max=600)


def _check_broker_url(value: str) -> str | None:
    if value and not re.match(r"^mqtts?://[^\s/:]+(:\d{1,5})?/?$", value):
        return f"must look like mqtt://host:1883 or mqtts://host:8883, got {value!r}"
    return None


def _check_device_id(value: str) -> str | None:
    if value and not re.match(r"^[A-Za-z0-9_-]{1,64}$", value):
        return "must be 1-64 characters of A-Z a-z 0-9 _ - (it is part of every MQTT topic)"
    return None


@dataclass(frozen=True)
class CloudConfig:
    url: str = setting("", doc="MQTT broker, `mqtt://host:1883` or `mqtts://host:8883`; empty = no cloud link.",
                       check=_check_broker_url)
    device_id: str = setting("", doc="This unit's id: topics live under `<topic_prefix>/<device_id>/`.",
                             check=_check_device_id)
    topic_prefix: str = setting("doorphone/v1", doc="Topic root before the device id (contract: doorphone/v1).")
    username: str = setting("", doc="MQTT username (password authentication).")
    password: str = setting("", doc="MQTT password; never logged or shown.", secret=True)
    ca_file: str = setting("", doc="CA certificate (PEM) that signed the broker's certificate (mqtts).")
    cert_file: str = setting("", doc="This unit's client certificate (PEM) for TLS client authentication.")
    key_file: str = setting("", doc="The client certificate's private key (PEM).")
    keepalive: int = setting(30, doc="MQTT keep-alive in seconds; the LWT fires about 1.5x this after a loss.",
                             min=5, max=3600)
    session_expiry: int = setting(86400, doc="Seconds the broker keeps this unit's session while it is away.",
                                  min=0, max=2**31)
    command_max_age: float = setting(300.0, doc="Commands whose `ts` is older than this many seconds are refused.",
                                     min=1, max=86400)
    max_payload: int = setting(65536, doc="Largest command payload accepted, in bytes.", min=1024, max=1048576)
    outbox_max: int = setting(100_000, doc="Events kept while offline; beyond it the oldest are dropped "
                              "(and counted), ordinary events before any alarm or lock fault.",
                              min=1000, max=10_000_000)
    inflight: int = setting(200, doc="Events sent and not yet acknowledged at once.", min=1, max=65535)
    ha_discovery: bool = setting(False, doc="Publish Home Assistant MQTT discovery: doors as locks, contacts as "
                                 "binary sensors, access as events. HA can then open doors: restrict it by ACL.")
    ha_prefix: str = setting("homeassistant", doc="Home Assistant's discovery prefix.")
    reconnect_max: float = setting(60.0, doc="Longest wait between reconnection attempts (seconds); the wait "
                                   "doubles from 1 s with random jitter.", min=1, max=3600)


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
        16, doc="Incoming SIP TCP/TLS connections open at once; past it new ones wait (their SYNs are dropped) "
        "and the newest are closed. pjlib has 64 socket handles for SIP, RTP and these together.", min=1, max=24)
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
    call_log_max: int = setting(50_000, doc="Call-history entries kept.", min=100, max=10_000_000)
    targets: tuple[CallTargetConfig, ...] = setting([], doc="One `[[sip.targets]]` table per call target.")
    buttons: tuple[CallButtonConfig, ...] = setting([], doc="One `[[sip.buttons]]` table per call button.")

    def target(self, key: str | int) -> CallTargetConfig | None:
        text = str(key)
        return next((t for t in self.targets if str(t.id) == text or (t.name and t.name == text)), None)


@dataclass(frozen=True)
class Config:
    site: SiteConfig = setting(SiteConfig(), doc="The site this unit serves.")
    daemon: DaemonConfig = setting(DaemonConfig(), doc="Process, storage and logging.")
    control: ControlConfig = setting(ControlConfig(), doc="The installer CLI socket.")
    gpio: GpioConfig = setting(GpioConfig(), doc="GPIO backend.")
    tamper: TamperConfig = setting(TamperConfig(), doc="Housing tamper switch.")
    access: AccessConfig = setting(AccessConfig(), doc="Access rules: keypad lockout.")
    keypad: KeypadConfig = setting(KeypadConfig(), doc="Serial keypad reader.")
    nfc: NfcConfig = setting(NfcConfig(), doc="NFC/RFID card reader.")
    camera: CameraConfig = setting(CameraConfig(), doc="Camera (QR reader).")
    cloud: CloudConfig = setting(CloudConfig(), doc="The cloud link over MQTT v5.")
    sip: SipConfig = setting(SipConfig(), doc="SIP calls (pjsua2).")
    doors: tuple[DoorConfig, ...] = setting([], doc="One `[[doors]]` table per door.")

    def door(self, door_id: int) -> DoorConfig | None:
        return next((d for d in self.doors if d.id == door_id), None)

    @property
    def state_path(self) -> Path:
        return Path(self.daemon.state_dir).absolute()

    @property
    def control_socket_path(self) -> Path:
        return Path(self.control.socket).absolute() if self.control.socket else self.state_path / "control.sock"


# --------------------------------------------------------------------------- loading


@dataclass
class Source:
    """Where each key path was set: a TOML line or an environment variable."""

    lines: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)

    def where(self, path: str) -> str:
        if path in self.env:
            return f"environment {self.env[path]}"
        if path in self.overrides:
            return f"override {self.overrides[path]}"
        probe = path
        while probe:
            if probe in self.lines:
                return f"line {self.lines[probe]}"
            probe = probe.rpartition(".")[0]
        return ""


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Map each key path (``doors[1].relay.pin``) to the line that sets it.

    tomllib keeps no positions, so this reads the file's headers and ``key =`` lines. It is only
    used to *locate* an error in a file tomllib already accepted, so it can afford to be simple.
    """
    lines: dict[str, int] = {}
    arrays: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _header_path(header.group(2).replace('"', "").replace(" ", ""), header.group(1), arrays)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            name = key.group(1).strip('"')
            lines[f"{table}.{name}" if table else name] = number
    return lines


def _header_path(name: str, brackets: str, arrays: dict[str, int]) -> str:
    parts = name.split(".")
    if brackets == "[[":
        arrays[name] = arrays.get(name, -1) + 1
    # Sub-tables of an array element ([doors.relay] after [[doors]]) belong to its last element.
    out: list[str] = []
    for i in range(len(parts)):
        prefix = ".".join(parts[: i + 1])
        out.append(f"{parts[i]}[{arrays[prefix]}]" if prefix in arrays else parts[i])
    return ".".join(out)


def load_config(path: Path | None = None, *, text: str | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read, apply run-time ``overrides`` (cloud/CLI ``config set``), then ``env`` (default: os.environ),
    and validate; raise ConfigError when wrong. The environment wins: it is the installer's last word.

    Every way a file can be wrong ends as one ConfigError with a one-line reason: the daemon exits 78
    on it at start (systemd does not loop), and a reload keeps the running configuration.
    """
    if text is None:
        if path is None:
            raise ValueError("load_config needs a path or text")
        text = _read_text(path)
    where = str(path or "config")
    try:
        return _load_text(text, where, os.environ if env is None else env, overrides or {})
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(where, f"values nested too deeply (more than {MAX_NESTING} levels)") from None
    except Exception as exc:  # a schema walk that met a shape nobody foresaw: still one line, never a traceback
        raise ConfigError(where, f"cannot be used: {type(exc).__name__}: {exc}") from None


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_FILE_BYTES:,} bytes: not a configuration file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {exc.start})") from exc


def _load_text(text: str, where: str, env: Mapping[str, str], overrides: Mapping[str, Any]) -> Config:
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(where, f"larger than {MAX_FILE_BYTES:,} characters: not a configuration file")
    deep = nesting_line(text, MAX_NESTING)
    if deep:
        raise ConfigError(where, f"values nested more than {MAX_NESTING} levels deep", f"line {deep}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, f"TOML syntax error: {exc}") from exc
    source = Source(lines=key_lines(text))
    apply_overrides(raw, overrides, source)
    apply_env_overrides(raw, env, source)
    config: Config = build(Config, raw, "", source)
    validate_config(config, source)
    return config


def nesting_line(text: str, limit: int) -> int:
    """The line where arrays/inline tables first nest deeper than ``limit``, or 0.

    tomllib parses nesting by recursion and dies with RecursionError (a traceback, thousands of
    lines) a few hundred levels down; this finds such a file first and names the line. It skips
    strings and comments roughly (no multi-line string awareness): a real file nests 3 deep.
    """
    if text.count("[") + text.count("{") <= limit:
        return 0
    depth, line, quote, comment, escaped = 0, 1, "", False, False
    for char in text:
        if char == "\n":
            line, comment, escaped = line + 1, False, False
            quote = "" if quote in ('"', "'") else quote
        elif comment or escaped:
            escaped = False
        elif quote:
            escaped = quote == '"' and char == "\\"
            quote = "" if char == quote else quote
        elif char in "\"'#":
            quote, comment = ("", True) if char == "#" else (char, False)
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth = max(depth - 1, 0)
    return 0


def config_warnings(config: Config) -> list[str]:
    """What is valid but almost certainly not meant: shown by --check-config, `config validate`,
    `doctor` and the start-up log.

    No doors is a warning, not an error: an installer commissioning a unit starts it before the
    relays are wired to enrol cards, test the keypad and run `doctor`.
    """
    if not config.doors:
        return ["no [[doors]] configured: no credential, exit button or call can open anything"]
    return []


def embedded_default_text() -> str:
    """The embedded default configuration (hw-sim, state in ./var, no cloud)."""
    return resources.files("doorphoned").joinpath("default.toml").read_text(encoding="utf-8")


def load_default(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    return load_config(text=embedded_default_text(), env=env, overrides=overrides)


# --------------------------------------------------------------------------- schema walk


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a schema class; cached: resolving them is most of a load's cost."""
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X``, ``X | None``, ``tuple[X, ...]``), if any."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for arg in typing.get_args(tp):
        if arg is not type(None) and arg is not Ellipsis:
            found = _dataclass_of(arg)
            if found:
                return found
    return None


def build(cls: type, data: Any, path: str, source: Source) -> Any:
    """Turn a TOML table into the dataclass ``cls``, checking types, limits and unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(path or "config", "must be a table", source.where(path))
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(path, key), "unknown key", source.where(_join(path, key)))
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key = _join(path, name)
        if name not in data:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                raise ConfigError(key, "required key is missing", source.where(path))
            continue
        values[name] = _convert(hints[name], data[name], key, source)
        _check_limits(fld, values[name], key, source)
    return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: Any, key: str, source: Source) -> Any:
    where = source.where(key)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return _convert(inner, value, key, source)
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, key, source)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(key, f"must be one of {choices}, got {value!r}", where)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {_tname(value)}", where)
        return tuple(_convert(args[0], item, f"{key}[{i}]", source) for i, item in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(key, "must be a table of strings", where)
        return types.MappingProxyType({k: _text(v, f"{key}.{k}", where) for k, v in value.items()})
    return _convert_scalar(tp, value, key, where)


def _convert_scalar(tp: Any, value: Any, key: str, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {_tname(value)}", where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {_tname(value)}", where)
        return _finite(value, key, where)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {_tname(value)}", where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {_tname(value)}", where)
        return _text(value, key, where)
    raise TypeError(f"schema type {tp!r} not supported")  # a bug in the schema, not in the file


def _finite(value: float, key: str, where: str) -> float:
    """NaN passes every ``<``/``>`` limit check and infinity never expires: both are refused here."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(key, f"must be a finite number, got {one_line(str(value), 40)}", where)
    return number


def _text(value: str, key: str, where: str) -> str:
    """NUL cannot reach a path, a header or SQLite intact; megabytes of text are no setting."""
    if "\x00" in value:
        raise ConfigError(key, "must not contain NUL characters", where)
    if len(value) > MAX_STRING:
        raise ConfigError(key, f"is {len(value):,} characters long; at most {MAX_STRING:,}", where)
    return value


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _check_limits(fld: dataclasses.Field[Any], value: Any, key: str, source: Source) -> None:
    low, high, check = fld.metadata.get("min"), fld.metadata.get("max"), fld.metadata.get("check")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and ((low is not None and value < low) or (high is not None and value > high)):
        raise ConfigError(key, f"must be between {_num(low)} and {_num(high)}, got {_num(value)}",
                              source.where(key))
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            raise ConfigError(key, problem, source.where(key))


def _num(value: float | None) -> str:
    if value is None:
        return "any"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------- cross-field rules


def validate_config(config: Config, source: Source) -> None:
    """Rules that span keys: unique door ids and pins, and each lock driver's required table."""
    seen_ids: set[int] = set()
    pins: dict[int, str] = {}
    if config.tamper.pin is not None:
        pins[config.tamper.pin] = "tamper.pin"
    for index, door in enumerate(config.doors):
        path = f"doors[{index}]"
        if door.id in seen_ids:
            raise ConfigError(f"{path}.id", f"door {door.id} is defined twice", source.where(f"{path}.id"))
        seen_ids.add(door.id)
        _require_driver_table(door, path, source)
        for part in ("relay", "sensor", "exit_button"):
            sub = getattr(door, part)
            if sub is None:
                continue
            key = f"{path}.{part}.pin"
            if sub.pin in pins:
                raise ConfigError(key, f"GPIO {sub.pin} is already used by {pins[sub.pin]}", source.where(key))
            pins[sub.pin] = key
    validate_readers(config, source)
    validate_sip(config, source)


def validate_sip(config: Config, source: Source) -> None:
    """Call buttons name existing targets on free pins; ids are unique."""
    sip = config.sip
    ids = [t.id for t in sip.targets]
    for index, target in enumerate(sip.targets):
        if ids.count(target.id) > 1:
            key = f"sip.targets[{index}].id"
            raise ConfigError(key, f"call target {target.id} is defined twice", source.where(key))
    used = {d.relay.pin for d in config.doors if d.relay} | {d.sensor.pin for d in config.doors if d.sensor} | \
        {d.exit_button.pin for d in config.doors if d.exit_button} | {config.tamper.pin}
    if sip.tls_port and not (sip.tls_cert and sip.tls_key):
        raise ConfigError("sip.tls_cert", "a TLS port needs tls_cert and tls_key", source.where("sip.tls_port"))
    for index, button in enumerate(sip.buttons):
        key = f"sip.buttons[{index}]"
        if button.target not in ids:
            raise ConfigError(f"{key}.target", f"no call target {button.target}", source.where(f"{key}.target"))
        if button.pin in used:
            raise ConfigError(f"{key}.pin", f"GPIO {button.pin} is already used", source.where(f"{key}.pin"))
        used.add(button.pin)


def validate_readers(config: Config, source: Source) -> None:
    """Each enabled reader needs its device and may only name doors that exist."""
    ids = {d.id for d in config.doors}
    readers = (("keypad", config.keypad.enabled, config.keypad.port, "port", config.keypad.doors, "doors"),
               ("nfc", config.nfc.enabled, config.nfc.device, "device", config.nfc.doors, "doors"),
               ("camera", config.camera.enabled, config.camera.source, "source", config.camera.qr_doors, "qr_doors"))
    for name, enabled, device, device_key, doors, doors_key in readers:
        if enabled and not device:
            key = f"{name}.{device_key}"
            raise ConfigError(key, f"{name} is enabled but has no {device_key}", source.where(f"{name}.enabled"))
        unknown = sorted(set(doors) - ids)
        if enabled and unknown:
            key = f"{name}.{doors_key}"
            raise ConfigError(key, f"no door {unknown[0]} is configured", source.where(key))
    if config.cloud.url and not config.cloud.device_id:
        raise ConfigError("cloud.device_id", "the cloud link needs a device id", source.where("cloud.url"))
    if bool(config.cloud.cert_file) != bool(config.cloud.key_file):
        raise ConfigError("cloud.key_file", "cert_file and key_file go together", source.where("cloud.cert_file"))
    if config.access.lockout_max < config.access.lockout_first:
        raise ConfigError("access.lockout_max", "must not be shorter than access.lockout_first",
                          source.where("access.lockout_max"))


def _require_driver_table(door: DoorConfig, path: str, source: Source) -> None:
    if door.lock == "relay" and door.relay is None:
        raise ConfigError(f"{path}.relay", 'lock = "relay" needs a [doors.relay] table with a pin',
                          source.where(f"{path}.lock"))
    if door.lock == "http" and door.http is None:
        raise ConfigError(f"{path}.http", 'lock = "http" needs a [doors.http] table with a url',
                          source.where(f"{path}.lock"))


# --------------------------------------------------------------------------- environment overrides


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str], source: Source) -> None:
    """Apply every ``DOORPHONED_<SECTION>_<KEY>`` variable to the raw table (in place).

    Doors are addressed by id: ``DOORPHONED_DOORS_2_HOLD_TIME=5``; nested tables continue the
    name: ``DOORPHONED_DOORS_1_RELAY_PIN=22``. An unknown name is an error, not a silent no-op:
    a typo in a unit file must not leave a door misconfigured.
    """
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        tokens = name[len(ENV_PREFIX):].lower().split("_")
        target, key, tp, path = _resolve_env(raw, Config, tokens, "", name)
        target[key] = _parse_env_value(tp, env[name], name, path)
        source.env[path] = name


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], source: Source) -> None:
    """Apply dotted-key overrides (``doors.1.hold_time = 5``, JSON values) to the raw table, in place."""
    for key in sorted(overrides):
        tokens = key.lower().replace(".", "_").split("_")
        target, name, _tp, path = _resolve_env(raw, Config, tokens, "", f"override {key}")
        target[name] = overrides[key]
        source.overrides[path] = key


def _resolve_env(table: dict[str, Any], cls: type, tokens: list[str], path: str,
                 var: str) -> tuple[dict[str, Any], str, Any, str]:
    hints = _hints(cls)
    for size in range(len(tokens), 0, -1):
        name = "_".join(tokens[:size])
        if name not in hints:
            continue
        rest, tp, key_path = tokens[size:], hints[name], _join(path, name)
        nested = _dataclass_of(tp)
        if not rest:
            return table, name, tp, key_path
        if nested is None:
            continue
        if typing.get_origin(tp) is tuple:
            return _resolve_env_element(table, name, nested, rest, key_path, var)
        sub = table.setdefault(name, {})
        if not isinstance(sub, dict):
            raise ConfigError(key_path, "must be a table", f"environment {var}")
        return _resolve_env(sub, nested, rest, key_path, var)
    raise ConfigError(var, "unknown configuration key")


def _resolve_env_element(table: dict[str, Any], name: str, cls: type, rest: list[str], path: str,
                         var: str) -> tuple[dict[str, Any], str, Any, str]:
    if not rest[0].isdigit() or len(rest) < 2:
        raise ConfigError(var, f"expected {name.upper()}_<id>_<KEY>")
    items = table.get(name, [])
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("id") == int(rest[0]):
            return _resolve_env(item, cls, rest[1:], f"{path}[{index}]", var)
    raise ConfigError(var, f"no {name} entry with id {rest[0]} in the configuration")


def _takes_text(tp: Any) -> bool:
    """Whether a value of this type is written as bare text in an environment variable."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return any(_takes_text(a) for a in args)
    return tp is str or (origin is Literal and all(isinstance(a, str) for a in args))


def _parse_env_value(tp: Any, text: str, var: str, path: str) -> Any:
    if _takes_text(tp):
        return text
    if nesting_line(text, MAX_NESTING):
        raise ConfigError(path, f"values nested more than {MAX_NESTING} levels deep", f"environment {var}")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"cannot parse {text!r} as a TOML value", f"environment {var}") from exc


# --------------------------------------------------------------------------- showing and documenting


def to_dict(obj: Any, *, redact: bool = True) -> Any:
    """A plain, JSON-ready view of a config object; secret values replaced by ``***``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for fld in dataclasses.fields(obj):
            value = getattr(obj, fld.name)
            if redact and fld.metadata.get("secret") and value:
                out[fld.name] = REDACTED if not isinstance(value, Mapping) else dict.fromkeys(value, REDACTED)
            elif redact and fld.metadata.get("url") and value:
                out[fld.name] = redact_url(value)
            else:
                out[fld.name] = to_dict(value, redact=redact)
        return out
    if isinstance(obj, tuple):
        return [to_dict(v, redact=redact) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v, redact=redact) for k, v in obj.items()}
    return obj


def iter_settings(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Every leaf setting as (dotted key, field, type), for docs and tests."""
    hints = _hints(cls)
    for fld in dataclasses.fields(cls):
        tp = hints[fld.name]
        nested = _dataclass_of(tp)
        key = _join(prefix, fld.name)
        if nested is not None:
            yield from iter_settings(nested, key + ("[]" if typing.get_origin(tp) is tuple else ""))
        else:
            yield key, fld, tp


def env_name(key: str) -> str:
    """The environment variable for a documented key (doors use their id in place of ``[]``)."""
    return ENV_PREFIX + key.replace("[]", "_<ID>").replace(".", "_").upper()


def reference_markdown() -> str:
    """The key reference table of docs/configuration.md, generated from the schema."""
    rows = ["| key | type | default | meaning | environment variable |", "|---|---|---|---|---|"]
    for key, fld, tp in iter_settings():
        default = "required" if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING \
            else _show_default(fld)
        limits = _limits_text(fld)
        rows.append(f"| `{key}` | {_type_text(tp)} | {default} | {fld.metadata['doc']}{limits} | `{env_name(key)}` |")
    return "\n".join(rows) + "\n"


def _show_default(fld: dataclasses.Field[Any]) -> str:
    value = fld.default if fld.default is not dataclasses.MISSING else fld.default_factory()  # type: ignore[operator]
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, tuple):
        value = list(value)
    if value is None:
        return "absent"
    return f"`{tomlish(value)}`"


def tomlish(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {tomlish(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(tomlish(v) for v in value) + "]"
    return str(value)


def _limits_text(fld: dataclasses.Field[Any]) -> str:
    low, high = fld.metadata.get("min"), fld.metadata.get("max")
    if low is None and high is None:
        return ""
    return f" Range {_num(low)}–{_num(high)}."


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return _type_text(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin is tuple:
        return f"list of {_type_text(args[0])}"
    if tp is Mapping or origin is Mapping:
        return "table of strings"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


GENERATED_MARKER = "<!-- generated from doorphoned/core/config.py: python -m doorphoned.core.config --update FILE -->"


def main() -> None:
    """``python -m doorphoned.core.config [--update FILE]``: print, or write into FILE, the key reference."""
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--update":
        path = Path(sys.argv[2])
        head = path.read_text(encoding="utf-8").split(GENERATED_MARKER)[0]
        path.write_text(f"{head}{GENERATED_MARKER}\n\n{reference_markdown()}", encoding="utf-8")
        return
    print(reference_markdown(), end="")


if __name__ == "__main__":
    main()
