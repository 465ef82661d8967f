"""The doors' configuration: GPIO backend, tamper switch and one ``[[doors]]`` table per door.

Rules within these sections live here (door ids and GPIOs unique, each lock driver's table present);
the composition root (``app/config.py``) calls :func:`validate_doors` and hands :func:`used_pins` to
the sections that take GPIOs of their own (SIP call buttons).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from doorphoned.core.config import ConfigError, Level, Source, check_name, check_url, setting


def _check_http_method(value: str) -> str | None:
    if value not in {"GET", "POST", "PUT", "PATCH"}:
        return "must be one of GET, POST, PUT, PATCH"
    return None


def _check_statuses(value: tuple[int, ...]) -> str | None:
    if not value or any(not 100 <= s <= 599 for s in value):
        return "must be a non-empty list of HTTP status codes (100-599)"
    return None


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
class PresenceConfig:
    pin: int | None = setting(None, doc="GPIO of a presence input that wakes the camera (a PIR or radar sensor, "
                              "a touch key): someone is at the unit before the picture shows it; absent = none.",
                              min=0, max=53)
    active_level: Level = setting("high", doc="Pin level while someone is there.")
    wake_seconds: float = setting(10.0, doc="Seconds of full-frame camera analysis (QR codes, faces) after the "
                                  "input goes active.", min=1, max=3600)


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
                       check=check_url, url=True)
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


@dataclass(frozen=True)
class DoorConfig:
    id: int = setting(doc="Door number 1-16, as used by `relay open N` and the cloud.", min=1, max=16)
    name: str = setting("", doc="Name shown to installers and in the logs.", check=check_name)
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


class RelaySections(Protocol):
    """What the doors feature reads of the root configuration (``app/config.Config`` has these sections)."""

    @property
    def gpio(self) -> GpioConfig: ...

    @property
    def tamper(self) -> TamperConfig: ...

    @property
    def presence(self) -> PresenceConfig: ...

    @property
    def doors(self) -> Sequence[DoorConfig]: ...


def validate_doors(doors: Sequence[DoorConfig], tamper: TamperConfig, source: Source,
                   presence: PresenceConfig | None = None) -> None:
    """Unique door ids and GPIOs (tamper and presence inputs included), and each lock driver's required table."""
    seen_ids: set[int] = set()
    pins: dict[int, str] = {}
    if tamper.pin is not None:
        pins[tamper.pin] = "tamper.pin"
    if presence is not None and presence.pin is not None:
        if presence.pin in pins:
            raise ConfigError("presence.pin", f"GPIO {presence.pin} is already used by tamper.pin",
                              source.where("presence.pin"))
        pins[presence.pin] = "presence.pin"
    for index, door in enumerate(doors):
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


def used_pins(doors: Sequence[DoorConfig], tamper: TamperConfig,
              presence: PresenceConfig | None = None) -> set[int | None]:
    """Every GPIO the doors, the tamper switch and the presence input take (``None`` for an absent input)."""
    return ({d.relay.pin for d in doors if d.relay} | {d.sensor.pin for d in doors if d.sensor}
            | {d.exit_button.pin for d in doors if d.exit_button} | {tamper.pin}
            | {presence.pin if presence is not None else None})


def _require_driver_table(door: DoorConfig, path: str, source: Source) -> None:
    if door.lock == "relay" and door.relay is None:
        raise ConfigError(f"{path}.relay", 'lock = "relay" needs a [doors.relay] table with a pin',
                          source.where(f"{path}.lock"))
    if door.lock == "http" and door.http is None:
        raise ConfigError(f"{path}.http", 'lock = "http" needs a [doors.http] table with a url',
                          source.where(f"{path}.lock"))
