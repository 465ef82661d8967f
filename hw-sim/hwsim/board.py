"""The simulated board: which pin is which relay, sensor, button or switch, and their polarities."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


class BoardError(ValueError):
    """The board file is wrong; the message names the entry."""


@dataclass(frozen=True)
class RelayLine:
    n: int
    pin: int
    active_high: bool


@dataclass(frozen=True)
class DoorLines:
    n: int
    sensor_pin: int | None
    open_high: bool
    exit_pin: int | None
    pressed_high: bool


@dataclass(frozen=True)
class ButtonLine:
    n: int
    pin: int
    pressed_high: bool


@dataclass(frozen=True)
class Board:
    relays: tuple[RelayLine, ...]
    doors: tuple[DoorLines, ...]
    tamper_pin: int | None
    tamper_high: bool
    call_buttons: tuple[ButtonLine, ...] = ()
    presence_pin: int | None = None  # a PIR / radar sensor or a touch key: someone is at the unit
    presence_high: bool = True

    def call_button(self, n: int) -> ButtonLine:
        for button in self.call_buttons:
            if button.n == n:
                return button
        raise BoardError(f"the board has no call button {n} "
                         f"(call buttons: {', '.join(str(b.n) for b in self.call_buttons) or 'none'})")

    def door(self, n: int) -> DoorLines:
        for door in self.doors:
            if door.n == n:
                return door
        raise BoardError(f"the board has no door {n} (doors: {', '.join(str(d.n) for d in self.doors)})")

    def idle_levels(self) -> dict[int, bool]:
        """Input levels at rest: doors closed, buttons released, housing closed, nobody at the unit."""
        levels: dict[int, bool] = {}
        for door in self.doors:
            if door.sensor_pin is not None:
                levels[door.sensor_pin] = not door.open_high
            if door.exit_pin is not None:
                levels[door.exit_pin] = not door.pressed_high
        if self.tamper_pin is not None:
            levels[self.tamper_pin] = not self.tamper_high
        for button in self.call_buttons:
            levels[button.pin] = not button.pressed_high
        if self.presence_pin is not None:
            levels[self.presence_pin] = not self.presence_high
        return levels


def _high(entry: dict[str, Any], key: str, default: str, where: str) -> bool:
    value = entry.get(key, default)
    if value not in ("high", "low"):
        raise BoardError(f"{where}.{key} must be \"high\" or \"low\", got {value!r}")
    return bool(value == "high")


def parse_board(text: str) -> Board:
    data = tomllib.loads(text)
    relays = tuple(
        RelayLine(int(r["n"]), int(r["pin"]), _high(r, "active_level", "high", f"relays[{i}]"))
        for i, r in enumerate(data.get("relays", []))
    )
    doors = tuple(
        DoorLines(
            int(d["n"]), d.get("sensor_pin"), _high(d, "open_level", "high", f"doors[{i}]"),
            d.get("exit_pin"), _high(d, "pressed_level", "low", f"doors[{i}]"),
        )
        for i, d in enumerate(data.get("doors", []))
    )
    buttons = tuple(ButtonLine(int(b["n"]), int(b["pin"]), _high(b, "pressed_level", "low", f"call_buttons[{i}]"))
                    for i, b in enumerate(data.get("call_buttons", [])))
    tamper, presence = data.get("tamper", {}), data.get("presence", {})
    return Board(relays, doors, tamper.get("pin"), _high(tamper, "active_level", "high", "tamper"), buttons,
                 presence.get("pin"), _high(presence, "active_level", "high", "presence"))


def load_board(path: Path | None) -> Board:
    if path is None:
        return parse_board(resources.files("hwsim").joinpath("board.toml").read_text(encoding="utf-8"))
    try:
        return parse_board(path.read_text(encoding="utf-8"))
    except (KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise BoardError(f"{path}: {exc}") from exc
