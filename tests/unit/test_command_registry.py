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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.app.commands import build_registry
from doorphoned.cloud.config import CloudConfig
from doorphoned.cloud.feature import CloudFeature
from doorphoned.control.server import ControlServer
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock
from doorphoned.core.commands import CLOUD, Caller, Command, CommandError, Peer, Registry, arg_int
from doorphoned.core.store import Store
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

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
        self.loop: asyncio.AbstractEventLoop | None = None

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
          "access.check", "call", "hangup", "log.calls", "monitor.status", "capture", "log.captures",
          "phone.add", "phone.list", "phone.remove", "face.upload", "face.enrol", "face.list", "face.show",
          "face.photo", "face.remove", "face.check"}
MQTT = {"open_door", "status", "log.level", "user.upsert", "user.remove", "tempkey.add", "tempkey.remove",
        "tempkey.revoke", "restart", "sync.snapshot", "sync.delta", "config.set", "monitor.start", "monitor.stop",
        "capture", "capture.get", "face.upsert", "face.remove"}


def test_the_daemon_registry_keeps_every_wire_name_and_declares_every_field():
    registry, _ = build_registry(MagicMock(), MagicMock(), MagicMock())
    assert set(registry.names("socket")) == SOCKET
    assert set(registry.names("mqtt")) == MQTT  # log.upload is added by the cloud feature itself
    socket_only = {"relay.open", "relay.test", "tempkey.create", "call"}  # they record the installer's uid
    assert not {registry.get("socket", n).mqtt for n in socket_only} - {None}  # type: ignore[union-attr]
    assert registry.get("socket", "relay.open").fields == {"door"}  # type: ignore[union-attr]
    assert registry.get("mqtt", "open_door").fields == {"door", "source", "user"}  # type: ignore[union-attr]
    assert registry.get("socket", "config.set") is registry.get("mqtt", "config.set")


# ---------------------------------------------------------------- parity fuzz
# The same request over both interfaces: where the socket's envelope let it through, the registry and the
# handler's argument readers answer both in the same words; the handler runs only when both accept.
# `make test` runs a fast pass; `make fuzz-registry` (FUZZ_CASES=10000) the full one, in one event loop.

names = st.one_of(st.just("level.set"), st.sampled_from(["level.se", "LEVEL.SET", "level.set ", "status", ""]),
                  hostile_text.filter(lambda t: len(t) < 200))
keys = st.one_of(st.just("level"), st.sampled_from(["levle", "Level", "level ", "door", "args", "cmd"]),
                 hostile_text.filter(lambda t: len(t) < 200 and t not in ("id", "ts")))
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, st.integers(-3, 10),
                    hostile_text.filter(lambda t: len(t) < 5000))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
deep = st.integers(10, 3000).map(lambda n: json.loads("[" * min(n, 900) + "]" * min(n, 900)))


def _dumps(value: Any) -> str:
    """JSON as a hostile client writes it: NaN/Infinity tokens and lone surrogate escapes kept."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True)


@settings(max_examples=fuzz_cases(100), deadline=None, suppress_health_check=list(HealthCheck))
@given(cases=st.lists(st.tuples(names, st.lists(st.tuples(keys, values | deep), max_size=4)), min_size=1,
                      max_size=5))
def test_fuzz_both_interfaces_answer_alike_and_run_nothing_they_refuse(tmp_path_factory, cases):
    both = _shared_both(tmp_path_factory)
    for name, pairs in cases:
        args = dict(pairs)
        ran = len(both.calls)
        body = "{" + ", ".join(f"{_dumps(k)}: {_dumps(v)}" for k, v in pairs) + "}"  # duplicate keys kept
        over_socket = both.loop.run_until_complete(both.server._handle(
            ('{"cmd": ' + _dumps(name) + ', "args": ' + body + "}").encode("utf-8", "surrogatepass"), PEER))
        both._ids += 1
        envelope = f'{{"id": "f{both._ids}", "ts": {both.clock.now().timestamp()!r}'
        payload = (envelope + (", " + body[1:] if pairs else "}")).encode("utf-8", "surrogatepass")
        over_mqtt = both.loop.run_until_complete(both.cloud.execute(name, payload))
        assert len(both.calls) - ran == over_socket["ok"] + over_mqtt["ok"]  # a handler runs only when accepted
        if over_socket.get("error", "").startswith("malformed request") or len(pairs) != len(args):
            assert not over_mqtt["ok"]  # the strict parser refused it on both (its path differs: args.x / x)
            continue
        assert over_socket["ok"] == over_mqtt["ok"], (over_socket, over_mqtt)
        assert over_socket.get("error") == over_mqtt.get("error"), (name, args)
        assert "\n" not in str(over_mqtt.get("error", "")) and len(str(over_mqtt.get("error", ""))) < 400


_BOTH: dict[str, Both] = {}


def _shared_both(tmp_path_factory: Any) -> Both:
    """One server, one cloud feature, one store and one loop for every case (not one per case)."""
    if "both" not in _BOTH:
        both = Both(tmp_path_factory.mktemp("registry"))
        both.loop = asyncio.new_event_loop()  # closed with the interpreter: the module's cases share it
        _BOTH["both"] = both
    return _BOTH["both"]
