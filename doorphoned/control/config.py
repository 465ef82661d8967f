"""The control socket's section (``[control]``)."""

from __future__ import annotations

from dataclasses import dataclass

from doorphoned.core.config import setting


@dataclass(frozen=True)
class ControlConfig:
    socket: str = setting("", doc="Path of the doorphonectl Unix socket; empty = `<state_dir>/control.sock`.")
    group: str = setting("doorphoned", doc="Group whose members may use the control socket (root always may).")
