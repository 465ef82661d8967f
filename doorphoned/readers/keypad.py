"""The serial keypad: PIN entry over a UART (or hw-sim's pty), read with pyserial.

Protocol (documented in docs/readers.md): the keypad sends one ASCII byte per key:
``0``-``9`` digits, ``#`` submit, ``*`` clear. CR/LF are ignored. Anything else spoils the entry
(it is refused as ``malformed`` when submitted), as does an entry longer than ``max_length`` keys.
An entry idle for ``digit_timeout`` seconds is cleared, so a half-typed PIN is never completed by
the next visitor.

The serial port is read from the asyncio loop with ``add_reader`` on its file descriptor: no
thread, and a vanished device shows up at once as a read error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import serial

from doorphoned.core.clock import Clock
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import PinEntry
from doorphoned.readers.base import ReaderFeature
from doorphoned.readers.config import KeypadConfig

log = logging.getLogger(__name__)

IGNORED = frozenset(b"\r\n")


@dataclass(frozen=True)
class Submitted:
    """What ``#`` produced: the digits, or the reason the entry is refused."""

    digits: str
    problem: str = ""


class KeypadParser:
    """Pure key-by-key state machine; ``feed`` returns the entries completed by these bytes."""

    def __init__(self, max_length: int, digit_timeout: float) -> None:
        self.max_length = max_length
        self.digit_timeout = digit_timeout
        self._keys: list[str] = []
        self._spoiled = ""
        self._last = 0.0

    def feed(self, data: bytes, now: float) -> list[Submitted]:
        if self._keys and now - self._last > self.digit_timeout:
            self.clear()
        self._last = now
        done = []
        for byte in data:
            if byte in IGNORED:
                continue
            done.extend(self._key(chr(byte) if byte < 128 else "\ufffd"))
        return done

    def _key(self, key: str) -> list[Submitted]:
        if key == "*":
            self.clear()
        elif key == "#":
            entry = self._submit()
            self.clear()
            return [entry] if entry else []
        elif len(self._keys) >= self.max_length:
            self._spoiled = self._spoiled or f"entry longer than {self.max_length} keys"
        elif key.isdigit() and key.isascii():
            self._keys.append(key)
        else:
            self._spoiled = self._spoiled or "entry contains a key that is not a digit"
        return []

    def _submit(self) -> Submitted | None:
        if self._spoiled:
            return Submitted("", self._spoiled)
        if not self._keys:
            return None
        return Submitted("".join(self._keys))

    def clear(self) -> None:
        self._keys.clear()
        self._spoiled = ""

    @property
    def pending(self) -> int:
        return len(self._keys)


class KeypadReader(ReaderFeature):
    name = "keypad"

    def __init__(self, config: KeypadConfig, gate: Gate, clock: Clock) -> None:
        super().__init__(gate, config.doors, clock)
        self.config = config

    async def run_session(self) -> None:
        loop = asyncio.get_running_loop()
        port = serial.Serial(self.config.port, self.config.baudrate, timeout=0, exclusive=True)
        parser = KeypadParser(self.config.max_length, self.config.digit_timeout)
        failed: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                data = port.read(256)
            except serial.SerialException as exc:
                if not failed.done():
                    failed.set_exception(ConnectionError(f"{self.config.port}: {exc}"))
                return
            for entry in parser.feed(data, self.clock.monotonic()):
                self.spawn(self._submit(entry), "entry")

        loop.add_reader(port.fileno(), readable)
        self.connected()
        try:
            await failed
        finally:
            loop.remove_reader(port.fileno())
            port.close()

    async def _submit(self, entry: Submitted) -> None:
        # A spoiled entry is still a presentation: it is logged and counts towards lockout.
        await self.deliver(PinEntry(entry.digits, self.name, problem=entry.problem))

    def reader_status(self) -> dict[str, Any]:
        return {"port": self.config.port}
