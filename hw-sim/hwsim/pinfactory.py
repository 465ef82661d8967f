"""The ``hwsim`` gpiozero pin factory: GPIO whose other end is the hw-sim process.

Registered under the entry point group ``gpiozero_pin_factories``, so a device built on it is a
normal gpiozero device and doorphoned's relay and input code is the production code. Pin state
lives here (a MockPin) and is mirrored over the hw-sim socket: output writes are sent without
waiting for a reply (the relay path must stay fast), input changes arrive on a reader thread and
are delivered like real edges (``when_changed`` fires on that thread, as it does with lgpio).

If hw-sim goes away the factory keeps the pins' last states, reports ``connected = False`` and
reconnects in the background, replaying what it drives, like a board powered back on. While it is
away, an output write raises :class:`HwsimLinkError` (a gpiozero ``PinError``), the way an I2C relay
board that stops answering fails a write: a relay that did not move is never taken for one that did.
The pin keeps the written state, so whatever the driver writes last (its safe state) is what is replayed.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from gpiozero.exc import PinError, PinFixedPull, PinInvalidPull
from gpiozero.pins.mock import MockFactory, MockPin

from hwsim import default_socket

log = logging.getLogger("hwsim.pinfactory")

RECONNECT_SECONDS = 0.5


class HwsimError(RuntimeError):
    """hw-sim cannot be reached."""


class HwsimLinkError(PinError):  # type: ignore[misc]
    """An output write did not reach hw-sim: the board is not there (the line is released)."""


class HwsimPin(MockPin):  # type: ignore[misc]
    """A MockPin whose outputs are mirrored to hw-sim and whose inputs follow it."""

    def __init__(self, factory: HwsimFactory, info: Any) -> None:
        super().__init__(factory, info)
        level = factory.input_level(info.name)
        if level is not None:
            self._state = level

    def _set_function(self, value: str) -> None:
        super()._set_function(value)
        if value == "input":
            level = self.factory.input_level(self.info.name)
            if level is not None:
                self._state = level
        self.factory.announce(self)

    def _set_pull(self, value: str) -> None:
        # hw-sim decides the level of its inputs; the pull is only recorded.
        if self.function != "input":
            raise PinFixedPull(f"cannot set pull on non-input pin {self!r}")
        if value not in ("floating", "up", "down"):
            raise PinInvalidPull("pull must be floating, up, or down")
        self._pull = value

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        if changed and self._function == "output" \
                and not self.factory.send({"op": "set", "pin": self.number, "level": int(value)}):
            raise HwsimLinkError(f"GPIO{self.number}: hw-sim board not reachable at {self.factory.socket_path}")
        return changed

    @property
    def number(self) -> int:
        return int(self.info.name.removeprefix("GPIO"))


class HwsimFactory(MockFactory):  # type: ignore[misc]
    """Pin factory named ``hwsim``; ``socket_path`` defaults to ``$HWSIM_SOCKET`` or ./var/hwsim.sock."""

    def __init__(self, socket_path: str | Path | None = None, connect_timeout: float = 2.0) -> None:
        super().__init__(pin_class=HwsimPin)
        self.socket_path = Path(socket_path) if socket_path else default_socket()
        self._levels: dict[int, bool] = {}
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = threading.Event()
        self._connect(connect_timeout)
        self._reader = threading.Thread(target=self._read_forever, name="hwsim-gpio", daemon=True)
        self._reader.start()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def input_level(self, name: str) -> bool | None:
        return self._levels.get(int(name.removeprefix("GPIO")))

    def announce(self, pin: HwsimPin) -> None:
        """Tell hw-sim a pin's direction (and, for outputs, its level)."""
        self.send({"op": "function", "pin": pin.number, "function": pin._function, "level": int(pin._state)})

    def send(self, message: dict[str, Any]) -> bool:
        """Send without waiting for a reply; False when it did not go out (replayed from pin state on
        reconnect)."""
        data = (json.dumps(message) + "\n").encode()
        with self._send_lock:
            if self._sock is None:
                return False
            try:
                self._sock.sendall(data)
            except OSError as exc:
                log.error("hw-sim connection lost while writing: %s", exc)
                self._drop_socket()
                return False
        return True

    def close(self) -> None:
        super().close()
        self._closed.set()
        with self._send_lock:
            self._drop_socket()

    # ---- connection
    def _connect(self, timeout: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.socket_path))
            sock.sendall(b'{"op": "hello", "role": "gpio"}\n')
            reader = sock.makefile("rb")
            snapshot = json.loads(reader.readline() or b"{}")
        except (OSError, ValueError) as exc:
            sock.close()
            raise HwsimError(f"hw-sim is not reachable at {self.socket_path}: {exc} (is `hwsim run` going?)") from exc
        sock.settimeout(None)
        self._levels = {int(p): bool(v) for p, v in snapshot.get("levels", {}).items()}
        self._file = reader
        self._sock = sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_forever(self) -> None:
        while not self._closed.is_set():
            try:
                line = self._file.readline()
            except (OSError, ValueError):
                line = b""
            if line:
                self._on_message(line)
                continue
            with self._send_lock:
                self._drop_socket()
            if not self._closed.is_set():
                self._reconnect()

    def _reconnect(self) -> None:
        log.error("hw-sim connection lost; reconnecting to %s", self.socket_path)
        while not self._closed.wait(RECONNECT_SECONDS):
            try:
                self._connect(2.0)
            except HwsimError:
                continue
            for pin in list(self.pins.values()):
                self.announce(pin)
                if pin._function == "input":
                    self._apply_level(pin.number, self._levels.get(pin.number, pin._state))
            log.warning("hw-sim connection restored")
            return

    def _on_message(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("hw-sim sent a malformed line")
            return
        if message.get("ev") == "level":
            self._levels[int(message["pin"])] = bool(message["level"])
            self._apply_level(int(message["pin"]), bool(message["level"]))

    def _apply_level(self, number: int, level: bool) -> None:
        for pin in list(self.pins.values()):
            if pin.number == number and pin._function == "input":
                if level:
                    pin.drive_high()
                else:
                    pin.drive_low()
