"""GPIO inputs (door contacts, exit buttons, tamper) handed to the asyncio loop.

gpiozero calls edge callbacks on its own thread; the loop owns all state, so each edge is
re-delivered with ``call_soon_threadsafe`` and handled there, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice

BOUNCE_SECONDS = 0.02


class InputLine:
    """One input whose *active* meaning (open, pressed, tampered) is at ``active_level``."""

    def __init__(self, pin: int, active_level: str, pin_factory: Any, loop: asyncio.AbstractEventLoop,
                 on_change: Callable[[bool], None]) -> None:
        # active low = contact to GND with the pull-up on; active high = pull-down.
        self._device = DigitalInputDevice(pin, pull_up=active_level == "low", bounce_time=BOUNCE_SECONDS,
                                          pin_factory=pin_factory)
        self.pin = pin
        self._loop = loop
        self._on_change = on_change
        self._device.when_activated = lambda: self._edge(True)
        self._device.when_deactivated = lambda: self._edge(False)

    @property
    def active(self) -> bool:
        return bool(self._device.is_active)

    def _edge(self, active: bool) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_change, active)

    def close(self) -> None:
        self._device.when_activated = None
        self._device.when_deactivated = None
        self._device.close()
