"""One command registry behind the control socket and MQTT: one declaration answers on both, and both
refuse an undeclared field, a wrong type and an unknown command with the same reason, before any handler
runs (real server and cloud dispatch code, a real SQLite store; no sockets or broker needed for this)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from unittest.mock import MagicMock

import pytest

from doorphoned.app.commands import build_registry
from doorphoned.cloud.feature import CloudFeature
from doorphoned.control.server import ControlServer
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock
from doorphoned.core.commands import CLOUD, Caller, Command, CommandError, Peer, Registry, arg_int
from doorphoned.core.config import CloudConfig
from doorphoned.core.store import Store

PEER = Peer(pid=1, uid=0, gid=0)


class Both:
    """One registry entry (``level.set`` on both interfaces) served by the socket server and the cloud."""

    def __init__(self, tmp_path: Any) -> None:
        self.calls: list[tuple[dict[str, Any], Caller]] = []
        self.registry = Registry([Command("level.set", "level.set", self._handler, frozenset({"level"}),
                                          "set a level")])
        self.clock = FixedClock(datetime.now(UTC))
        self.store = Store(tmp_path / "db.sqlite")
        self.store.open()
        self.store.migrate()
        self.server = ControlServer(tmp_path / "control.sock", "nogroup-here", self.registry)
        self.cloud = CloudFeature(CloudConfig(), self.store, EventBus(), self.clock, MagicMock(), self.registry)
        self._ids = 0

    async def _handler(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        level = arg_int(args, "level", 1, 7)
        self.calls.append((args, caller))
        return {"level": level}

    def socket(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        line = json.dumps({"cmd": cmd, "args": args}).encode()
        return asyncio.run(self.server._handle(line, PEER))

    def mqtt(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        payload = json.dumps({"id": f"c{self._ids}", "ts": self.clock.now().timestamp(), **args}).encode()
        return asyncio.run(self.cloud.execute(cmd, payload))


@pytest.mark.parametrize("cmd, args, reason", [
    ("level.set", {"level": 3, "levle": 4}, "level.set: unknown field 'levle' (expected: level)"),
    ("level.set", {"level": "3"}, "level must be a whole number from 1 to 7"),
    ("level.set", {"level": True}, "level must be a whole number from 1 to 7"),
    ("level.set", {"level": 3.0}, "level must be a whole number from 1 to 7"),
    ("level.explode", {"level": 3}, "unknown command 'level.explode'"),
])
def test_one_entry_refuses_the_same_way_on_both_interfaces(tmp_path, cmd, args, reason):
    both = Both(tmp_path)
    over_socket, over_mqtt = both.socket(cmd, args), both.mqtt(cmd, args)
    assert over_socket == {"ok": False, "error": reason}
    assert over_mqtt["ok"] is False and over_mqtt["error"] == reason
    assert both.calls == []


def test_one_entry_answers_on_both_interfaces_and_knows_who_asked(tmp_path):
    both = Both(tmp_path)
    assert both.socket("level.set", {"level": 3}) == {"ok": True, "result": {"level": 3}}
    assert both.mqtt("level.set", {"level": 5}) == {"id": "c1", "ok": True, "result": {"level": 5}}
    assert [caller for _, caller in both.calls] == [PEER, CLOUD]


def test_a_name_declared_twice_on_one_interface_is_refused():
    async def handler(args: dict[str, Any], caller: Caller) -> None:
        return None

    registry = Registry([Command("status", "status", handler)])
    registry.add(Command("status.more", None, handler))
    with pytest.raises(ValueError, match="socket command 'status' declared twice"):
        registry.add(Command("status", None, handler))
    with pytest.raises(ValueError, match="offered on no interface"):
        Command(None, None, handler)
    with pytest.raises(CommandError, match="unknown command"):
        registry.check("mqtt", "status.more", {})


# The wire names every documented command keeps (docs/cli.md, docs/mqtt-api.md).
SOCKET = {"status", "relay.list", "relay.open", "relay.test", "log.doors", "log.level", "config.show", "config.set",
          "doctor", "cloud.status", "loop.probe", "user.add", "user.list", "user.show", "user.remove", "pin.set",
          "card.add", "card.remove", "tempkey.create", "tempkey.list", "tempkey.show", "tempkey.remove", "tempkey.qr",
          "access.check", "call", "hangup", "log.calls"}
MQTT = {"open_door", "status", "log.level", "user.upsert", "user.remove", "tempkey.add", "tempkey.remove",
        "restart", "sync.snapshot", "sync.delta", "config.set"}


def test_the_daemon_registry_keeps_every_wire_name_and_declares_every_field():
    registry, _ = build_registry(MagicMock(), MagicMock(), MagicMock())
    assert set(registry.names("socket")) == SOCKET
    assert set(registry.names("mqtt")) == MQTT  # log.upload is added by the cloud feature itself
    socket_only = {"relay.open", "relay.test", "tempkey.create", "call"}  # they record the installer's uid
    assert not {registry.get("socket", n).mqtt for n in socket_only} - {None}  # type: ignore[union-attr]
    assert registry.get("socket", "relay.open").fields == {"door"}  # type: ignore[union-attr]
    assert registry.get("mqtt", "open_door").fields == {"door", "source", "user"}  # type: ignore[union-attr]
    assert registry.get("socket", "config.set") is registry.get("mqtt", "config.set")
