"""The control socket behind ``doorphonectl``: JSON lines over a Unix socket, root and one group only.

Two locks on the door: the socket file is mode 0660 owned by the ``doorphoned`` group, and every
connection's peer credentials (SO_PEERCRED: pid, uid, gid) are checked again, so a socket file
with loosened permissions still admits nobody else. Requests are untrusted input: size-capped,
parsed defensively, routed through a table, and always answered, errors included.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from doorphoned.core.commands import CommandError, Peer, Registry
from doorphoned.core.config import one_line
from doorphoned.core.feature import Feature
from doorphoned.core.strictjson import StrictJsonError, loads

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 300.0
MAX_DEPTH = 16  # a real request nests 3 deep ({"args": {"settings": {...}}})
REQUEST_FIELDS = frozenset({"cmd", "args"})


class RequestError(ValueError):
    """A request refused before any handler sees it; the message is the one-line reason."""


def parse_request(line: bytes) -> dict[str, Any]:
    """One JSON request, by the same strict rules as every MQTT payload (core/strictjson.py): invalid
    UTF-8, duplicate keys, NaN/Infinity and overflowing numbers, nesting deeper than MAX_DEPTH, and text
    with control, bidi or lone surrogate characters are refused before any handler sees them; so are
    fields other than ``cmd`` and ``args``."""
    try:
        request = loads(line, max_depth=MAX_DEPTH)
    except StrictJsonError as exc:
        raise RequestError(f"malformed request: {one_line(str(exc), 150)}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise RequestError('malformed request: expected {"cmd": str, "args": {...}}')
    unknown = sorted(set(request) - REQUEST_FIELDS)
    if unknown:
        raise RequestError(f"malformed request: unknown field {one_line(unknown[0], 40)!r} (expected cmd, args)")
    if not isinstance(request.get("args", {}), dict):
        raise RequestError("malformed request: args must be an object")
    return request


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def process_groups(pid: int) -> set[int]:
    """Supplementary groups of a live process, from /proc (what it really holds, not /etc/group)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class ControlServer(Feature):
    name = "control"

    def __init__(self, path: Path, group: str, commands: Registry) -> None:
        super().__init__()
        self.path = path
        self.group = group
        self._commands = commands  # the one registry: this server answers its socket names
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._remove_stale_socket()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        gid = group_id(self.group)
        os.chmod(self.path, 0o660)
        if gid is not None and os.geteuid() == 0:
            os.chown(self.path, -1, gid)
        log.info("control socket %s (group %s)", self.path, self.group if gid is not None else "none: root only")

    async def _remove_stale_socket(self) -> None:
        if not self.path.exists():
            return
        try:
            _, writer = await asyncio.open_unix_connection(str(self.path))
        except OSError:
            self.path.unlink()
            return
        writer.close()
        raise RuntimeError(f"another doorphoned is already serving {self.path}")

    async def stop_feature(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def admits(self, peer: Peer) -> bool:
        if peer.uid in (0, os.geteuid()):
            return True
        gid = group_id(self.group)
        return gid is not None and (peer.gid == gid or gid in process_groups(peer.pid))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # asyncio's server made it: owned here so that stop ends open connections
            self.adopt(task)
        sock = writer.get_extra_info("socket")
        peer = peer_credentials(sock)
        try:
            if not self.admits(peer):
                log.warning("control socket: refused uid %d (pid %d)", peer.uid, peer.pid)
                await self._reply(writer, {"ok": False, "error": (
                    f"refused: uid {peer.uid} is neither root nor a member of group '{self.group}'")})
                return
            while True:
                line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                if not line:
                    return
                await self._reply(writer, await self._handle(line, peer))
        except (TimeoutError, ConnectionError):
            return
        except (asyncio.LimitOverrunError, ValueError):
            with contextlib.suppress(ConnectionError):
                await self._reply(writer, {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"})
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write((json.dumps(reply, default=str) + "\n").encode())
        await writer.drain()

    async def _handle(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            request = parse_request(line)
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        cmd: str = request["cmd"]
        args: dict[str, Any] = request.get("args", {})
        try:  # unknown command, undeclared field: the registry's refusal, the same as over MQTT
            command = self._commands.check("socket", cmd, args)
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            return {"ok": True, "result": await command.handler(args, peer)}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}
