"""Features own their tasks and timers; stopping collects every error instead of stopping at the first."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from doorphoned.app.config import load_config
from doorphoned.app.daemon import ConfigLoader, Daemon, take_instance_lock
from doorphoned.core.clock import FixedClock
from doorphoned.core.feature import Feature, Supervisor

START = datetime(2026, 11, 23, 12, tzinfo=UTC)


class Busy(Feature):
    """Starts a task, a timer and, in its own stop, one more of each."""

    def __init__(self, name: str, clock: FixedClock, fail_stop: bool = False, fail_start: bool = False) -> None:
        super().__init__(clock)
        self.name = name
        self.fail_stop, self.fail_start = fail_stop, fail_start
        self.stopped = 0
        self.fired: list[str] = []

    async def start(self) -> None:
        self.spawn(asyncio.Event().wait(), "forever")
        self.later(10, self.fired.append, "timer")
        if self.fail_start:
            raise OSError("device gone")

    async def stop_feature(self) -> None:
        self.stopped += 1
        self.spawn(asyncio.Event().wait(), "late")
        self.later(1, self.fired.append, "late timer")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} is stuck")


def _tasks_of(name: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(f"{name}:")]


def test_a_stopped_feature_leaves_no_task_and_no_timer():
    async def scenario() -> None:
        clock = FixedClock(START)
        feature = Busy("busy", clock)
        await feature.start()
        assert len(_tasks_of("busy")) == 1 and len(clock.pending()) == 1
        await feature.stop()
        assert _tasks_of("busy") == [] and clock.pending() == [] and feature.owned() == ([], [])
        await clock.run_for(60)
        assert feature.fired == []

    asyncio.run(scenario())


def test_a_timer_that_fires_or_is_cancelled_is_forgotten_and_a_failing_one_is_logged(caplog):
    async def scenario() -> None:
        clock = FixedClock(START)
        feature = Busy("busy", clock)
        for _ in range(100):
            feature.later(1, lambda: None).cancel()
        feature.later(1, feature.fired.append, "ran")
        feature.later(2, lambda: 1 / 0)
        clock.advance(2)
        assert feature.fired == ["ran"] and feature.owned() == ([], [])

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert any("busy timer" in r.getMessage() and r.exc_info for r in caplog.records)


def test_every_feature_stops_even_after_one_raised_and_each_error_names_its_feature(caplog):
    async def scenario() -> tuple[list[str], list[Busy]]:
        clock = FixedClock(START)
        features = [Busy("first", clock, fail_stop=True), Busy("second", clock),
                    Busy("third", clock, fail_stop=True)]
        supervisor = Supervisor(clock)
        for feature in features:
            supervisor.add(feature)
        await supervisor.start_all()
        errors = await supervisor.stop_all()
        assert clock.pending() == [] and not [t for f in features for t in _tasks_of(f.name)]
        return errors, features

    with caplog.at_level(logging.ERROR):
        errors, features = asyncio.run(scenario())
    assert [f.stopped for f in features] == [1, 1, 1]
    assert errors == ["third: third is stuck", "first: first is stuck"]  # reverse order, both kept
    logged = [r.getMessage() for r in caplog.records]
    assert "feature third failed to stop" in logged and "feature first failed to stop" in logged


def test_a_failed_start_is_retried_on_the_clock_and_the_retry_is_cancelled_at_stop():
    async def scenario() -> None:
        clock = FixedClock(START)
        feature = Busy("flaky", clock, fail_start=True)
        supervisor = Supervisor(clock)
        supervisor.add(feature)
        await supervisor.start_all()
        assert supervisor.report()[0]["state"] == "retrying" and feature.stopped == 1
        await clock.run_for(1)  # RETRY_FIRST
        assert feature.stopped == 2  # tried again and failed again
        feature.fail_start = False
        await clock.run_for(2)  # the second retry, after a doubled delay
        assert supervisor.report()[0]["state"] == "running"
        await supervisor.stop_all()
        assert clock.pending() == [] and _tasks_of("flaky") == []
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("supervisor:")]

    asyncio.run(scenario())


CONFIG = """
[daemon]
state_dir = "{state}"

[[doors]]
id = 1
lock = "relay"
[doors.relay]
pin = 17
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    text = CONFIG.format(state=tmp_path)
    config = load_config(text=text, env={})
    return Daemon(config, ConfigLoader(lambda overrides: load_config(text=text, env={}), "test"),
                  clock=FixedClock(START))


def test_daemon_stop_stops_every_feature_and_fails_the_exit_status(daemon):
    async def scenario() -> int:
        clock = FixedClock(START)
        daemon.supervisor = Supervisor(clock)
        for feature in (Busy("a", clock), Busy("b", clock, fail_stop=True), Busy("c", clock)):
            daemon.supervisor.add(feature)
        await daemon.supervisor.start_all()
        return await daemon.stop()

    assert asyncio.run(scenario()) == 1
    assert [s["state"] for s in daemon.supervisor.report()] == ["stopped"] * 3


def test_daemon_cleanup_releases_every_part_after_one_failed(daemon, tmp_path, caplog):
    def broken_close() -> None:
        raise OSError("disk gone")

    async def scenario() -> list[str]:
        daemon.store.open()
        daemon._instance_lock = take_instance_lock(tmp_path)
        store = daemon.store
        store.close, real_close = broken_close, store.close  # type: ignore[method-assign]
        try:
            return daemon.cleanup()
        finally:
            real_close()

    with caplog.at_level(logging.ERROR):
        errors = asyncio.run(scenario())
    assert errors == ["store: OSError: disk gone"]
    assert any(r.getMessage() == "cleanup: store failed" for r in caplog.records)
    assert daemon._instance_lock is None
    import os

    os.close(take_instance_lock(tmp_path))  # the lock was released although the store failed first


def test_stopping_the_control_server_ends_its_open_connections(tmp_path):
    """asyncio's server makes a task per connection; the feature owns it, so stop ends an idle client."""
    from doorphoned.control.server import ControlServer
    from doorphoned.core.commands import Registry

    async def scenario() -> bytes:
        server = ControlServer(tmp_path / "control.sock", "nogroup-here", Registry())
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control.sock"))
        for _ in range(500):  # the handler task starts when the loop accepts the connection
            if server.owned()[0]:
                break
            await asyncio.sleep(0.01)
        assert len(server.owned()[0]) == 1
        await server.stop()
        assert server.owned() == ([], [])
        left = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return left

    assert asyncio.run(scenario()) == b""  # closed by the server, not by the idle timeout


def test_run_daemon_stops_every_feature_and_cleans_up_when_one_stop_raises(tmp_path, monkeypatch, caplog):
    """The whole lifecycle (setup, start, stop, cleanup) of the production Daemon on mock pins: a feature
    whose stop raises does not keep the others from stopping, nor the store and lock from being released."""
    from doorphoned.app.config import load_default
    from doorphoned.app.daemon import run_daemon
    from doorphoned.relay.doorlog import DoorLogFeature

    env = {"DOORPHONED_GPIO_PIN_FACTORY": "mock", "DOORPHONED_DAEMON_STATE_DIR": str(tmp_path),
           "DOORPHONED_SIP_ENABLED": "false", "DOORPHONED_KEYPAD_ENABLED": "false",
           "DOORPHONED_NFC_ENABLED": "false", "DOORPHONED_CAMERA_ENABLED": "false"}
    config = load_default(env=env)

    async def broken_stop(self: DoorLogFeature) -> None:
        raise RuntimeError("door log stuck")

    monkeypatch.setattr(DoorLogFeature, "stop_feature", broken_stop)
    daemon = Daemon(config, ConfigLoader(lambda overrides: load_default(env=env), "test"))

    async def scenario() -> int:
        async def stop_when_running() -> None:
            await daemon.started.wait()
            daemon.request_stop()

        stopper = asyncio.create_task(stop_when_running())
        code = await run_daemon(daemon)
        await stopper
        return code

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == 1
    states = {s["name"]: s["state"] for s in daemon.supervisor.report()}
    assert set(states.values()) == {"stopped"} and "doors" in states and "control" in states
    assert "feature door_log failed to stop" in [r.getMessage() for r in caplog.records]
    assert daemon._instance_lock is None and daemon.store._db is None
    import os

    os.close(take_instance_lock(tmp_path))


def test_a_daemon_whose_start_fails_still_stops_the_features_that_started(tmp_path):
    """Before, a failure late in start skipped stop: the doors were never put back to their safe state."""
    from doorphoned.app.config import load_default
    from doorphoned.app.daemon import run_daemon

    env = {"DOORPHONED_GPIO_PIN_FACTORY": "mock", "DOORPHONED_DAEMON_STATE_DIR": str(tmp_path),
           "DOORPHONED_SIP_ENABLED": "false", "DOORPHONED_KEYPAD_ENABLED": "false",
           "DOORPHONED_NFC_ENABLED": "false", "DOORPHONED_CAMERA_ENABLED": "false"}
    daemon = Daemon(load_default(env=env), ConfigLoader(lambda overrides: load_default(env=env), "test"))

    def refuse(status: str) -> None:
        raise RuntimeError("READY=1 could not be built")

    daemon.notifier.ready = refuse  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="READY"):
        asyncio.run(run_daemon(daemon))
    states = {s["name"]: s["state"] for s in daemon.supervisor.report()}
    assert states and set(states.values()) == {"stopped"}
    assert daemon._instance_lock is None and daemon.store._db is None
