"""Client side of the control socket, shared by doorphonectl, benches and tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

PRODUCTION_SOCKET = Path("/run/doorphoned/control.sock")
SIM_SOCKET = Path("var/control.sock")


class ControlError(RuntimeError):
    """The daemon refused or could not be reached; the message is the CLI's one-line reason."""


def default_socket() -> Path:
    """``$DOORPHONECTL_SOCKET``, else the `make run` instance under ./var, else the system daemon."""
    if os.environ.get("DOORPHONECTL_SOCKET"):
        return Path(os.environ["DOORPHONECTL_SOCKET"])
    if SIM_SOCKET.exists():
        return SIM_SOCKET
    return PRODUCTION_SOCKET


class ControlClient:
    def __init__(self, path: Path | None = None, timeout: float = 60.0) -> None:
        self.path = path or default_socket()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except PermissionError as exc:
            sock.close()
            raise ControlError(f"permission denied on {self.path}: only root and members of group "
                               "'doorphoned' may use doorphonectl") from exc
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ControlError(f"doorphoned is not running (no socket at {self.path})") from exc
        except OSError as exc:  # a path too long for AF_UNIX, a file in place of a folder, ...
            sock.close()
            raise ControlError(f"cannot connect to doorphoned at {self.path}: {exc.strerror or exc}") from exc
        self._sock = sock
        self._file = sock.makefile("rb")

    def call(self, cmd: str, **args: Any) -> Any:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            # If the daemon refused us before reading, its one-line reason is still waiting to be read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._sock.sendall((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
            line = self._file.readline()
        except TimeoutError as exc:
            raise ControlError(f"doorphoned did not answer within {self.timeout:g} s") from exc
        except OSError as exc:
            raise ControlError(f"connection to doorphoned failed: {exc}") from exc
        if not line:
            raise ControlError("doorphoned closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "unknown error"))
        return reply.get("result")

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
