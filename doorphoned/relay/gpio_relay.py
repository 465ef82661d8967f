"""The GPIO relay driver: a relay coil on a gpiozero output (any pin factory, hw-sim included)."""

from __future__ import annotations

from typing import Any

from gpiozero import DigitalOutputDevice

from doorphoned.config import RelayConfig
from doorphoned.relay.driver import DriverHealth, LockDriver, LockError


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
        self._write(not self.config.invert)
        self.unlocked = True

    async def lock(self) -> None:
        self._write(self.config.invert)
        self.unlocked = False

    def _write(self, energise: bool) -> None:
        if self._device is None or self._device.closed:
            raise LockError("relay_unavailable", f"relay on GPIO{self.config.pin} is not open")
        if energise:
            self._device.on()
        else:
            self._device.off()

    def describe(self) -> dict[str, object]:
        return {"driver": "relay", "pin": self.config.pin, "active_level": self.config.active_level,
                "invert": self.config.invert, "energised": self.energised}

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
