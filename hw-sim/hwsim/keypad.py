"""The simulated keypad: a pty pair. The daemon opens the slave side with pyserial, exactly like a UART.

A symlink (``keypad.tty`` next to hw-sim's socket) always points at the current slave, so the
daemon's configured port stays the same across ``unplug``/``plug``.
"""

from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path


class SimKeypad:
    def __init__(self, link: Path) -> None:
        self.link = link
        self._master: int | None = None
        self._slave: int | None = None

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def device(self) -> str | None:
        return os.ttyname(self._slave) if self._slave is not None else None

    def plug(self) -> None:
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, before anyone reads it
        self._master, self._slave = master, slave
        tmp = self.link.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        """Like pulling the keypad's cable: the daemon's open port fails with an I/O error."""
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def press(self, keys: str) -> None:
        if self._master is None:
            raise OSError("keypad is unplugged")
        os.write(self._master, keys.encode("latin-1", errors="replace"))
        self._drain()

    def _drain(self) -> None:
        """Discard anything the daemon wrote to the keypad (keeps the pty buffer from filling)."""
        assert self._master is not None
        os.set_blocking(self._master, False)
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._master, 4096):
                pass
        os.set_blocking(self._master, True)
