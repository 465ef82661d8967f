"""The SIP feature's own logic over a stand-in backend: restarts, routing timers, call history.

The stand-in implements the SipBackend ABC (no pjsua2 here; the real stack is exercised end to
end in tests/e2e/test_sip*.py). Time is the manual FixedClock: ring, call and lock-out timers fire when
the test moves the clock, never after a real sleep.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.app.config import load_config
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock
from doorphoned.core.events import AlarmChanged, CallEnded, CallRinging
from doorphoned.core.ports import MonitorGrant
from doorphoned.core.store import Store
from doorphoned.sip import feature as sip_feature
from doorphoned.sip.backend import IncomingCall, SipBackend, SipListener, SipSettings
from doorphoned.sip.feature import GUESSING_LOCKOUT, SipFeature
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text

CONFIG = """
[[doors]]
id = 1
lock = "relay"
dtmf_code = "#"
[doors.relay]
pin = 17

[sip]
enabled = true
ring_timeout = 10
max_call_time = 60
dtmf_max_wrong_keys = 4
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

    async def call(self, uri: str, created, headers=()) -> int:
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
    yield feature, backends, ended, clock
    store.close()


async def until(predicate, what: str) -> None:
    """For what crosses a real thread (the SIP settings are read off the loop): a condition, not a margin."""
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def place(feature: SipFeature, clock: FixedClock, target: str) -> dict:
    """``call`` waits (on the clock) up to a quarter of the ring timeout for a leg to ring."""
    placing = asyncio.create_task(feature.call(target))
    await clock.run_for(feature.sip.ring_timeout / 4)
    return await placing


def test_a_dead_sip_thread_is_replaced(world):
    feature, backends, _, clock = world

    async def run() -> None:
        await feature.start()
        backends[0].running = False  # the watch sees it too: still only one replacement
        feature.on_backend_died("RuntimeError: boom")  # reported by the thread
        await until(lambda: len(backends) == 2 and backends[1].alive, "the replacement")
        await clock.run_for(sip_feature.WATCH_EVERY)
        assert len(backends) == 2 and feature.restarts == 1
        backends[1].running = False  # died without a word: the watch notices at its next round
        assert len(backends) == 2
        await clock.run_for(sip_feature.WATCH_EVERY)
        await until(lambda: len(backends) == 3 and backends[2].alive, "the watch's replacement")
        assert feature.restarts == 2
        await feature.stop()

    asyncio.run(run())


def test_app_then_phone_cancels_the_first_wave_then_rings_the_landline(world):
    feature, backends, ended, clock = world

    async def run() -> None:
        await feature.start()
        backend = backends[0]
        result = await place(feature, clock, "Flat")
        assert result["legs"] == ["sip:app@10.0.0.1", "sip:mon@10.0.0.2"]
        await clock.run_for(10 - 2.5 - 0.01)  # ring timeout 10 s from the INVITEs
        assert backend.hung_up == [] and len(backend.dialled) == 2
        await clock.run_for(0.01)
        assert backend.hung_up == [1, 2] and backend.dialled[2] == "sip:landline@10.0.0.3"
        feature.on_call_state(3, "confirmed", 200, "OK", 0.0)
        feature.on_call_state(3, "disconnected", 200, "", 0.0)
        await feature.stop()

    asyncio.run(run())
    [call] = ended
    assert (call.type, call.peer, call.target, call.reason) == ("forwarded", "sip:landline@10.0.0.3", "Flat", "hangup")
    assert [r.type for r in feature.calllog.recent()] == ["forwarded"]


def test_all_legs_declining_moves_on_at_once_and_ends_missed(world):
    feature, backends, ended, clock = world

    async def run() -> None:
        await feature.start()
        placing = asyncio.create_task(feature.call("1"))
        await clock.run_for(0)
        for call_id in (1, 2):
            feature.on_call_state(call_id, "disconnected", 486, "Busy Here", 0.0)
        await clock.run_for(0)
        assert backends[0].dialled[2:] == ["sip:landline@10.0.0.3"]  # no wait for the ring timeout
        feature.on_call_state(3, "disconnected", 603, "Decline", 0.0)
        await clock.run_for(0)
        with pytest.raises(sip_feature.SipError, match="declined"):
            await placing
        await feature.stop()

    asyncio.run(run())
    [call] = ended
    assert (call.type, call.reason, call.answered) == ("missed", "declined (603)", None)


def _incoming(feature: SipFeature, call_id: int, peer: str = "sip:door@10.0.0.9") -> None:
    feature.on_incoming(IncomingCall(call_id, peer, "10.0.0.9:5060", True, 0.0))
    feature.on_call_state(call_id, "confirmed", 200, "OK", 0.0)


def test_an_answered_call_is_hung_up_at_the_max_call_time(world):
    feature, backends, ended, clock = world

    async def run() -> None:
        await feature.start()
        _incoming(feature, 7)
        await clock.run_for(59.9)
        assert backends[0].hung_up == []
        await clock.run_for(0.1)  # max_call_time 60 s
        assert backends[0].hung_up == [7]
        await clock.run_for(0)
        await feature.stop()

    asyncio.run(run())
    [call] = ended
    assert (call.type, call.reason) == ("incoming", "max_call_time")


def test_guessing_dtmf_locks_the_peer_out_until_the_lockout_ends(world):
    feature, backends, _, clock = world
    alarms: list[AlarmChanged] = []
    feature._bus.subscribe(AlarmChanged, alarms.append, "test")

    async def run() -> None:
        await feature.start()
        for call_id in (1, 2, 3):
            _incoming(feature, call_id)
            for _ in range(4):  # dtmf_max_wrong_keys
                feature.on_dtmf(call_id, "5", "rfc2833", 0.0)
            await clock.run_for(1)
        assert backends[0].hung_up == [1, 2, 3]
        assert [(a.kind, a.active) for a in alarms] == [("dtmf_lockout", True)]
        _incoming(feature, 4)
        feature.on_dtmf(4, "#", "rfc2833", 0.0)  # the right code, but not heard while locked out
        await clock.run_for(1)
        assert feature.calls[4].opened == [] and feature.dtmf_seen
        await clock.run_for(GUESSING_LOCKOUT - 2.1)  # locked out at the third call, 2 s in
        assert len(alarms) == 1
        await clock.run_for(0.1)
        assert [(a.kind, a.active) for a in alarms] == [("dtmf_lockout", True), ("dtmf_lockout", False)]
        await feature.stop()

    asyncio.run(run())


def test_a_stopped_sip_feature_leaves_no_task_and_no_timer(world):
    feature, _, _, clock = world

    async def run() -> None:
        await feature.start()
        await place(feature, clock, "Flat")
        _incoming(feature, 9)
        assert clock.pending()  # the watch, ring and max-call timers
        await feature.stop()
        assert feature.owned() == ([], []) and clock.pending() == []
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sip:")]

    asyncio.run(run())


class Grants:
    """A stand-in for the monitor stream's grants (``core.ports.MonitorGrants``) and its viewer list."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.revoked: list[str] = []
        self.viewing: list[dict] = []

    async def issue(self, purpose: str, cap: int | None = None) -> MonitorGrant:
        grant_id = f"g{len(self.issued) + 1}"
        self.issued.append(grant_id)
        return MonitorGrant(grant_id, f"rtsp://s-{grant_id}:secret@unit:8554/live/ch00_0", 0.0, 300)

    async def revoke(self, grant_id: str) -> bool:
        self.revoked.append(grant_id)
        return True

    async def viewers(self) -> dict:
        return {"viewers": list(self.viewing)}


class Shots:
    """A stand-in for the captures feature (``core.ports.Snapshots``): ids 41, 42, ... once released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.taken: list[tuple[str, int | None]] = []

    async def capture_for(self, trigger: str, door: int | None) -> int | None:
        await self.release.wait()
        self.taken.append((trigger, door))
        return 40 + len(self.taken)


def _video_world(tmp_path, grants: Grants, shots: Shots):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    bus = EventBus()
    seen: list[object] = []
    bus.subscribe(CallRinging, seen.append, "test")
    bus.subscribe(CallEnded, seen.append, "test")
    clock = FixedClock(datetime(2026, 11, 23, 12, tzinfo=UTC))
    feature = SipFeature(load_config(text=CONFIG, env={}), bus, store, None, clock,  # type: ignore[arg-type]
                         lambda: None, lambda: UTC, backend_factory=lambda _s: StandIn(),
                         monitor=lambda: grants, snapshots=lambda: shots)
    return feature, seen, clock, store


def test_a_ring_names_each_legs_url_and_the_capture_and_the_end_the_watching_callees_video(tmp_path):
    grants, shots = Grants(), Shots()
    feature, seen, clock, store = _video_world(tmp_path, grants, shots)
    figures = {"fps": 14.5, "bitrate_bps": 800_000, "packet_loss": 0.25, "rtt_ms": 3.0, "rtcp": True,
               "transport": "udp"}

    async def run() -> None:
        await feature.start()
        shots.release.set()
        await place(feature, clock, "Flat")
        grants.viewing = [{"grant": "g2", "purpose": "call", **figures, "jitter": 9},  # the monitor watches
                          {"grant": "other", "purpose": "cloud", **figures, "fps": 1.0}]  # not this call's
        await clock.run_for(sip_feature.WATCH_EVERY * sip_feature.VIDEO_SAMPLE_EVERY)
        grants.viewing = []  # it left before the end: its last figures stay
        feature.on_call_state(1, "confirmed", 200, "OK", 0.0)  # the app answers (it never watched)
        feature.on_call_state(1, "disconnected", 200, "", 0.0)
        await until(lambda: any(isinstance(e, CallEnded) for e in seen), "the call's end")
        await until(lambda: len(grants.revoked) == 2, "the URLs revoked")
        await feature.stop()

    asyncio.run(run())
    ring, end = seen[0], seen[-1]
    assert isinstance(ring, CallRinging) and isinstance(end, CallEnded)
    assert [(c.uri, c.monitor_url) for c in ring.callees] == [
        ("sip:app@10.0.0.1", "rtsp://s-g1:secret@unit:8554/live/ch00_0"),
        ("sip:mon@10.0.0.2", "rtsp://s-g2:secret@unit:8554/live/ch00_0")]
    assert (ring.door, ring.wave, ring.capture_id, shots.taken) == (1, 0, 41, [("call", 1)])
    assert (end.call_id, end.capture_id, dict(end.video or {})) == (ring.call_id, 41, figures)
    [row] = feature.calllog.recent()
    assert (row.call_id, row.capture_id, row.video) == (ring.call_id, 41, figures)
    assert sorted(grants.revoked) == ["g1", "g2"]
    store.close()


def test_a_slow_capture_rings_without_its_id_and_the_history_still_gets_it(tmp_path):
    grants, shots = Grants(), Shots()
    feature, seen, clock, store = _video_world(tmp_path, grants, shots)

    async def run() -> None:
        await feature.start()
        await place(feature, clock, "Flat")
        await clock.run_for(sip_feature.RING_CAPTURE_WAIT)
        assert [type(e) for e in seen] == [CallRinging]  # rang after 1 s without the picture
        shots.release.set()
        await until(lambda: shots.taken, "the capture")
        await clock.run_for(10)  # ring timeout: the landline is rung (its ring names the capture now)
        await clock.run_for(sip_feature.RING_CAPTURE_WAIT)
        await clock.run_for(10)
        await until(lambda: any(isinstance(e, CallEnded) for e in seen), "the missed call")
        await feature.stop()

    asyncio.run(run())
    rings = [e for e in seen if isinstance(e, CallRinging)]
    assert [(r.wave, r.capture_id) for r in rings] == [(0, None), (1, 41)]
    [end] = [e for e in seen if isinstance(e, CallEnded)]
    assert (end.type, end.capture_id, end.video) == ("missed", 41, None)
    assert feature.calllog.recent()[0].capture_id == 41
    store.close()


HOSTILE = (st.none() | st.booleans() | hostile_numbers | hostile_text
           | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=fuzz_cases(500), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["fps", "bitrate_bps", "packet_loss", "rtt_ms", "rtcp", "transport",
                                        "grant", "jitter", "\u202e", "\x00"]), HOSTILE, max_size=10))
def test_a_viewer_entry_of_any_shape_gives_figures_the_row_and_the_cloud_can_carry(entry):
    figures = sip_feature.video_figures(entry)
    text = json.dumps(figures, allow_nan=False)  # valid JSON: no NaN/Infinity reaches the row or the cloud
    assert len(text) < 200 and set(figures) == {"fps", "bitrate_bps", "packet_loss", "rtt_ms", "rtcp", "transport"}
    assert figures["transport"] in (None, "udp", "tcp") and isinstance(figures["rtcp"], bool)
    for key in ("fps", "bitrate_bps", "packet_loss", "rtt_ms"):
        assert figures[key] is None or (not isinstance(figures[key], bool) and figures[key] >= 0)
    if entry.get("fps") == 14.5:
        assert figures["fps"] == 14.5
