"""The SIP feature's own logic over a stand-in backend: restarts, routing timers, call history.

The stand-in implements the SipBackend ABC (no pjsua2 here; the real stack is exercised end to
end in tests/e2e/test_sip*.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from doorphoned.bus import EventBus
from doorphoned.clock import FixedClock
from doorphoned.config import load_config
from doorphoned.events import CallEnded
from doorphoned.sip import feature as sip_feature
from doorphoned.sip.backend import SipBackend, SipListener, SipSettings
from doorphoned.sip.feature import SipFeature
from doorphoned.store import Store

CONFIG = """
[[doors]]
id = 1
lock = "relay"
dtmf_code = "#"
[doors.relay]
pin = 17

[sip]
enabled = true
ring_timeout = 1
[[sip.targets]]
id = 1
name = "Flat"
preference = "app_then_phone"
app = ["sip:app@10.0.0.1", "sip:mon@10.0.0.2"]
phone = "sip:landline@10.0.0.3"
"""


class StandIn(SipBackend):
    def __init__(self) -> None:
        self.running = False
        self.dialled: list[str] = []
        self.hung_up: list[int] = []
        self.listener: SipListener | None = None

    async def start(self, listener: SipListener) -> None:
        self.listener, self.running = listener, True

    async def stop(self) -> None:
        self.running = False

    async def call(self, uri: str, created) -> int:
        self.dialled.append(uri)
        created(len(self.dialled))
        return len(self.dialled)

    async def hangup(self, call_id: int, code: int = 0) -> None:
        self.hung_up.append(call_id)
        assert self.listener is not None
        asyncio.get_running_loop().call_soon(self.listener.on_call_state, call_id, "disconnected", 487, "", 0.0)

    @property
    def alive(self) -> bool:
        return self.running


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(sip_feature, "WATCH_EVERY", 0.05)
    monkeypatch.setattr(sip_feature, "QUICK_DEATH", 0.0)  # no restart delay here (tested end to end)
    store = Store(tmp_path / "db.sqlite")
    store.open()
    backends: list[StandIn] = []

    def factory(settings: SipSettings) -> StandIn:
        backends.append(StandIn())
        return backends[-1]

    bus = EventBus()
    ended: list[CallEnded] = []
    bus.subscribe(CallEnded, ended.append, "test")
    clock = FixedClock(datetime(2026, 11, 23, 12, tzinfo=UTC))
    feature = SipFeature(load_config(text=CONFIG, env={}), bus, store, None, clock,  # type: ignore[arg-type]
                         lambda: None, lambda: UTC, backend_factory=factory)
    yield feature, backends, ended
    store.close()


def test_a_dead_sip_thread_is_replaced(world):
    feature, backends, _ = world

    async def run() -> None:
        await feature.start()
        backends[0].running = False  # the watch sees it too: still only one replacement
        feature.on_backend_died("RuntimeError: boom")  # reported by the thread
        await asyncio.sleep(0.2)
        assert len(backends) == 2 and backends[1].alive and feature.restarts == 1
        backends[1].running = False  # died without a word: the watch notices
        await asyncio.sleep(0.2)
        assert len(backends) == 3 and backends[2].alive and feature.restarts == 2
        await feature.stop()

    asyncio.run(run())


def test_app_then_phone_cancels_the_first_wave_then_rings_the_landline(world):
    feature, backends, ended = world

    async def run() -> None:
        await feature.start()
        backend = backends[0]
        result = await feature.call("Flat")
        assert result["legs"] == ["sip:app@10.0.0.1", "sip:mon@10.0.0.2"]
        await asyncio.sleep(1.2)  # ring timeout 1 s
        assert backend.hung_up == [1, 2] and backend.dialled[2] == "sip:landline@10.0.0.3"
        feature.on_call_state(3, "confirmed", 200, "OK", 0.0)
        feature.on_call_state(3, "disconnected", 200, "", 0.0)
        await feature.stop()

    asyncio.run(run())
    [call] = ended
    assert (call.type, call.peer, call.target, call.reason) == ("forwarded", "sip:landline@10.0.0.3", "Flat", "hangup")
    assert [r.type for r in feature.calllog.recent()] == ["forwarded"]


def test_all_legs_declining_moves_on_at_once_and_ends_missed(world):
    feature, backends, ended = world

    async def run() -> None:
        await feature.start()
        await feature.call("1")
        for call_id in (1, 2):
            feature.on_call_state(call_id, "disconnected", 486, "Busy Here", 0.0)
        await asyncio.sleep(0.05)
        assert backends[0].dialled[2:] == ["sip:landline@10.0.0.3"]  # no wait for the ring timeout
        feature.on_call_state(3, "disconnected", 603, "Decline", 0.0)
        await asyncio.sleep(0.05)
        await feature.stop()

    asyncio.run(run())
    [call] = ended
    assert (call.type, call.reason, call.answered) == ("missed", "declined (603)", None)
