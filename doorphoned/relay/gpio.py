"""Choosing the gpiozero pin factory, in one place.

Devices receive the factory explicitly (never gpiozero's mutable global default), so tests can
run several daemons' worth of devices side by side and the choice is visible in the config.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from doorphoned.relay.config import GpioConfig


class GpioError(RuntimeError):
    pass


def make_pin_factory(config: GpioConfig) -> Any:
    """The factory named in ``gpio.pin_factory`` (None = gpiozero's own choice)."""
    name = config.pin_factory.strip().lower()
    if not name:
        return None
    found = entry_points(group="gpiozero_pin_factories", name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group="gpiozero_pin_factories"))
        raise GpioError(f"unknown gpio.pin_factory {name!r}; installed: {', '.join(known)}")
    factory_class = next(iter(found)).load()
    if name == "hwsim":
        return factory_class(socket_path=config.hwsim_socket or None)
    return factory_class()
