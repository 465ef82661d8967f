"""The doors feature: builds every configured door, the tamper and presence inputs, and runs them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock
from doorphoned.core.events import AlarmChanged, CameraWake
from doorphoned.core.feature import Feature
from doorphoned.core.inputs import InputLine
from doorphoned.relay.config import DoorConfig, PresenceConfig, RelaySections
from doorphoned.relay.door import Door, wiring
from doorphoned.relay.driver import LockDriver
from doorphoned.relay.gpio import make_pin_factory

log = logging.getLogger(__name__)


class UnknownDoorError(LookupError):
    pass


def make_driver(door: DoorConfig, pin_factory: Any) -> LockDriver:
    """The lock driver for a door; backends are imported only when a door uses them."""
    if door.lock == "http":
        from doorphoned.relay.http_lock import HttpLockDriver

        assert door.http is not None  # guaranteed by config validation
        return HttpLockDriver(door.http, door.id, door.hold_time)
    from doorphoned.relay.gpio_relay import RelayLockDriver

    assert door.relay is not None
    return RelayLockDriver(door.relay, pin_factory)


class DoorsFeature(Feature):
    name = "doors"

    def __init__(self, config: RelaySections, bus: EventBus, clock: Clock) -> None:
        super().__init__()
        self.config = config
        self._bus = bus
        self._clock = clock
        self.doors: dict[int, Door] = {}
        self.pin_factory: Any = None
        self._tamper: InputLine | None = None
        self.tamper_active: bool | None = None
        self._presence: InputLine | None = None

    async def start(self) -> None:
        self.pin_factory = make_pin_factory(self.config.gpio)
        for cfg in self.config.doors:
            door = Door(cfg, make_driver(cfg, self.pin_factory), self._bus, self._clock)
            self.doors[cfg.id] = door  # registered first so a failed start is still stopped
            await door.start(self.pin_factory)
        tamper = self.config.tamper
        if tamper.pin is not None:
            self._tamper = InputLine(tamper.pin, tamper.active_level, self.pin_factory,
                                     asyncio.get_running_loop(), self._on_tamper)
            if self._tamper.active:
                self._on_tamper(True)
        presence = self.config.presence
        if presence.pin is not None:
            self._presence = InputLine(presence.pin, presence.active_level, self.pin_factory,
                                       asyncio.get_running_loop(), self._on_presence)

    def needs_restart(self, config: RelaySections) -> bool:
        """Whether ``config`` changes wiring (GPIO backend, tamper, presence input, pins, drivers, the set of
        doors); the presence input's ``wake_seconds`` is read live."""
        old = self.config
        return (config.gpio != old.gpio or config.tamper != old.tamper
                or _wiring(config.presence) != _wiring(old.presence)
                or [wiring(d) for d in config.doors] != [wiring(d) for d in old.doors])

    def reconfigure(self, config: RelaySections) -> None:
        """Apply per-door timing and behaviour in place; the caller restarts for wiring changes."""
        self.config = config
        for cfg in config.doors:
            door = self.doors.get(cfg.id)
            if door is not None:
                door.reconfigure(cfg)

    async def stop_feature(self) -> None:
        """Every lock back to its safe state; every line released."""
        for line in (self._tamper, self._presence):
            if line is not None:
                line.close()
        self._tamper = self._presence = None
        for door in reversed(list(self.doors.values())):
            try:
                await door.stop()
            except Exception:
                log.exception("door %d did not stop cleanly", door.id)
        self.doors.clear()
        if self.pin_factory is not None:
            self.pin_factory.close()
            self.pin_factory = None

    @property
    def door_ids(self) -> frozenset[int]:
        """Every configured door, running or not (the access decision knows them all)."""
        return frozenset(d.id for d in self.config.doors)

    def door(self, door_id: int) -> Door:
        try:
            return self.doors[door_id]
        except KeyError:
            raise UnknownDoorError(f"no door {door_id}") from None

    def _on_presence(self, active: bool) -> None:
        """Someone is at the unit: the camera analyses full frames (QR codes, faces) before the picture has
        changed enough for its idle detector, e.g. a face held still in front of it."""
        if active:
            self._bus.publish(CameraWake(self._clock.now(), self.config.presence.wake_seconds, "presence"))

    def _on_tamper(self, active: bool) -> None:
        if active == self.tamper_active:
            return
        self.tamper_active = active
        detail = "housing opened" if active else "housing closed"
        self._bus.publish(AlarmChanged(self._clock.now(), "tamper", active, None, detail))

    def tamper_state(self) -> str | None:
        if self._tamper is None:
            return None
        if not getattr(self.pin_factory, "connected", True):
            return "unknown"
        return "tampered" if self._tamper.active else "ok"

    def status(self) -> dict[str, Any]:
        connected = bool(getattr(self.pin_factory, "connected", True))
        return {"doors": len(self.doors), "tamper": self.tamper_state() if connected else "unknown",
                "hardware_connected": connected,
                "hardware": "connected" if connected else "LOST: the relay board is not answering; every open "
                "fails as a lock fault until it is back"}


def _wiring(presence: PresenceConfig) -> tuple[int | None, str]:
    return presence.pin, presence.active_level
