"""The GPIO relay driver: a relay coil on a gpiozero output (any pin factory, hw-sim included)."""

from __future__ import annotations

import contextlib
from typing import Any

from gpiozero import DigitalOutputDevice
from gpiozero.exc import PinError

from doorphoned.core.ports import LockError
from doorphoned.relay.config import RelayConfig
from doorphoned.relay.driver import DriverHealth, LockDriver

BOARD_UNREACHABLE = "board_unreachable"


class RelayLockDriver(LockDriver):
    """Unlocked = coil energised (or released with ``invert``, Akuvox's "invert state").

    The safe state is written as the device's initial value, so the line never glitches into
    "unlocked" while the daemon starts.
    """

    kind = "relay"

    def __init__(self, config: RelayConfig, pin_factory: Any) -> None:
        super().__init__()
        self.config = config
        self._factory = pin_factory
        self._device: DigitalOutputDevice | None = None

    async def start(self) -> None:
        self._device = DigitalOutputDevice(
            self.config.pin, active_high=self.config.active_level == "high",
            initial_value=self.config.invert, pin_factory=self._factory,
        )

    @property
    def energised(self) -> bool:
        return self._device is not None and bool(self._device.value)

    async def unlock(self) -> None:
        if fault := self.fault():
            raise LockError(BOARD_UNREACHABLE, fault)
        try:
            self._write(not self.config.invert)
        except (PinError, OSError) as exc:
            # The coil did not move (the board is gone or refused the write): leave the line at the safe
            # level, so a board that comes back is driven locked, never into a late unlock.
            with contextlib.suppress(PinError, OSError, LockError):
                self._write(self.config.invert)
            self.unlocked = False
            raise LockError(BOARD_UNREACHABLE, f"relay on GPIO{self.config.pin} did not switch: {exc}") from exc
        self.unlocked = True

    async def lock(self) -> None:
        self.unlocked = False  # written as the pin's state even if the board is gone: replayed when it is back
        try:
            self._write(self.config.invert)
        except (PinError, OSError) as exc:
            raise LockError(BOARD_UNREACHABLE, f"relay on GPIO{self.config.pin} did not switch: {exc}") from exc

    def fault(self) -> str:
        if not getattr(self._factory, "connected", True):
            return f"relay board not reachable (GPIO{self.config.pin}): pin factory lost its hardware connection"
        return ""

    def _write(self, energise: bool) -> None:
        if self._device is None or self._device.closed:
            raise LockError("relay_unavailable", f"relay on GPIO{self.config.pin} is not open")
        if energise:
            self._device.on()
        else:
            self._device.off()

    def describe(self) -> dict[str, object]:
        return {"driver": "relay", "pin": self.config.pin, "active_level": self.config.active_level,
                "invert": self.config.invert, "energised": None if self.fault() else self.energised}

    async def check(self) -> DriverHealth:
        if self._device is None or self._device.closed:
            return DriverHealth(False, f"GPIO{self.config.pin} is not open")
        connected = getattr(self._factory, "connected", True)
        if not connected:
            return DriverHealth(False, f"GPIO{self.config.pin}: pin factory lost its hardware connection")
        return DriverHealth(True, f"GPIO{self.config.pin} open, coil {'energised' if self.energised else 'released'}")

    async def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None
