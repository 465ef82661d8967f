"""The pjsua2 backend in this process (real pjsua2, real sipp): its thread can die and a new one starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from doorphoned.sip.backend import SipSettings
from doorphoned.sip.pj import PjBackend
from tests.sipp import Sipp, free_port_pair, free_sip_port, uac_scenario


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.died = asyncio.Event()

    def on_backend_died(self, error: str) -> None:
        self.events.append(("died", error))
        self.died.set()

    def __getattr__(self, name: str):
        return lambda *args: self.events.append((name, *args))


def test_sip_thread_death_is_reported_and_a_new_stack_serves_calls(tmp_path: Path):
    port = free_sip_port()
    settings = SipSettings(port=port, rtp_port=free_port_pair(), allowed_hosts=frozenset({"127.0.0.1"}))

    async def scenario() -> list[tuple]:
        first, recorder = PjBackend(settings), Recorder()
        await first.start(recorder)
        await first.crash()
        await asyncio.wait_for(recorder.died.wait(), 5)
        assert not first.alive and "injected" in recorder.events[-1][1]
        await first.stop()
        second, calls = PjBackend(settings), Recorder()
        await second.start(calls)  # same port, same process: the old stack released everything
        sipp = Sipp(tmp_path, "after", uac_scenario("#", hold_ms=200), f"127.0.0.1:{port}", "-m", "1",
                    "-timeout", "10s", "-timeout_error").start()
        assert await asyncio.to_thread(sipp.wait) == 0
        await second.stop()
        return calls.events

    events = asyncio.run(scenario())
    kinds = [e[0] for e in events]
    assert kinds.count("on_incoming") == 1 and ("on_dtmf" in kinds)
    assert next(e for e in events if e[0] == "on_dtmf")[2:4] == ("#", "rfc2833")
