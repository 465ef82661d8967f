"""Door behaviour on gpiozero's MockFactory: the production Door and relay driver, simulated pins.

Time is the manual :class:`FixedClock`: relock, trigger delay and alarm timers fire when a test moves
the clock, so these tests neither sleep nor depend on the machine's load.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest
from gpiozero.pins.mock import MockFactory

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock, SystemClock
from doorphoned.core.events import AlarmChanged, Event, ExitButtonPressed, RelayChanged
from doorphoned.relay.config import ButtonConfig, DoorConfig, RelayConfig, SensorConfig
from doorphoned.relay.door import Door
from doorphoned.relay.gpio_relay import RelayLockDriver

START = datetime(2026, 11, 23, 12, tzinfo=UTC)
BASE = DoorConfig(id=1, hold_time=1.0, relay=RelayConfig(pin=17), sensor=SensorConfig(pin=5),
                  exit_button=ButtonConfig(pin=13), held_open_alarm=0, forced_open_grace=0.1)


def run(coro):
    return asyncio.run(coro)


async def make_door(factory, clock=None, **changes):
    cfg = dataclasses.replace(BASE, **changes)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(Event, events.append, "test")
    door = Door(cfg, RelayLockDriver(cfg.relay, factory), bus, clock or FixedClock(START))
    await door.start(factory)
    return door, events


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def test_monostable_pulse_and_safe_state(factory):
    async def scenario():
        clock = FixedClock(START)
        door, events = await make_door(factory, clock)
        relay = factory.pin(17)
        assert relay.state == 0  # safe state at start
        await door.open()
        assert relay.state == 1
        await clock.run_for(0.99)
        assert relay.state == 1
        await clock.run_for(0.01)  # hold_time 1 s
        assert relay.state == 0
        assert [e.unlocked for e in events if isinstance(e, RelayChanged)] == [True, False]
        await door.stop()
    run(scenario())


def test_overlapping_grants_extend_the_hold(factory):
    async def scenario():
        clock = FixedClock(START)
        door, _ = await make_door(factory, clock)
        relay = factory.pin(17)
        await door.open()
        await clock.run_for(0.6)
        await door.open()
        await clock.run_for(0.6)
        assert relay.state == 1  # would be 0 if the first hold had ended it
        await clock.run_for(0.39)
        assert relay.state == 1
        await clock.run_for(0.01)
        assert relay.state == 0
        await door.stop()
    run(scenario())


def test_active_low_and_inverted_relay(factory):
    async def scenario():
        relay_cfg = RelayConfig(pin=17, active_level="low", invert=True)
        door, _ = await make_door(factory, relay=relay_cfg)
        relay = factory.pin(17)
        # invert: the safe state is energised; active low: energised = pin low
        assert relay.state == 0
        await door.open()
        assert relay.state == 1
        await door.stop()
        assert door.driver.unlocked is False
    run(scenario())


def test_bistable_toggles(factory):
    async def scenario():
        clock = FixedClock(START)
        door, _ = await make_door(factory, clock, mode="bistable")
        relay = factory.pin(17)
        await door.open()
        await clock.run_for(60)
        assert clock.pending() == []
        assert relay.state == 1  # stays unlocked past hold_time
        await door.open()
        assert relay.state == 0
        await door.stop()
    run(scenario())


def test_trigger_delay(factory):
    async def scenario():
        clock = FixedClock(START)
        door, _ = await make_door(factory, clock, trigger_delay=0.3)
        relay = factory.pin(17)
        task = asyncio.create_task(door.open())
        await clock.run_for(0.29)
        assert relay.state == 0 and not task.done()
        await clock.run_for(0.01)
        assert task.done() and relay.state == 1
        await task
        await clock.run_for(0.99)  # the hold starts once the lock is open
        assert relay.state == 1
        await clock.run_for(0.01)
        assert relay.state == 0
        await door.stop()
    run(scenario())


def test_relock_when_door_closes(factory):
    async def scenario():
        door, _ = await make_door(factory, relock_on_close=True, hold_time=5)
        relay, sensor = factory.pin(17), factory.pin(5)
        await door.open()
        sensor.drive_high()  # open
        await door._clock.run_for(0)  # the edge comes through call_soon_threadsafe: no time passes
        sensor.drive_low()  # closed
        await door._clock.run_for(0)  # the edge comes through call_soon_threadsafe: no time passes
        assert relay.state == 0
        await door.stop()
    run(scenario())


def test_forced_open_and_exit_button_events(factory):
    async def scenario():
        door, events = await make_door(factory)
        sensor, button = factory.pin(5), factory.pin(13)
        sensor.drive_high()
        await door._clock.run_for(0)  # the edge comes through call_soon_threadsafe: no time passes
        alarms = [e for e in events if isinstance(e, AlarmChanged)]
        assert [(a.kind, a.active) for a in alarms] == [("forced_open", True)]
        sensor.drive_low()
        button.drive_low()  # pressed (pull-up, button to GND)
        await door._clock.run_for(0)  # the edge comes through call_soon_threadsafe: no time passes
        assert any(isinstance(e, ExitButtonPressed) and e.door == 1 for e in events)
        alarms = [e for e in events if isinstance(e, AlarmChanged)]
        assert [(a.kind, a.active) for a in alarms] == [("forced_open", True), ("forced_open", False)]
        await door.stop()
    run(scenario())


def test_held_open_alarm_fires_on_the_loop(factory):
    async def scenario():
        clock = FixedClock(START)
        door, events = await make_door(factory, clock, held_open_alarm=30)
        await door.open()
        factory.pin(5).drive_high()
        await clock.run_for(29.9)
        assert not [e for e in events if isinstance(e, AlarmChanged)]
        await clock.run_for(0.1)
        kinds = [(e.kind, e.active) for e in events if isinstance(e, AlarmChanged)]
        assert kinds == [("held_open", True)]
        factory.pin(5).drive_low()
        await clock.run_for(0)
        kinds = [(e.kind, e.active) for e in events if isinstance(e, AlarmChanged)]
        assert kinds == [("held_open", True), ("held_open", False)]
        await door.stop()
    run(scenario())


def test_events_carry_aware_timestamps(factory):
    async def scenario():
        door, events = await make_door(factory, SystemClock())
        await door.open()
        assert all(e.ts.tzinfo is not None and e.ts <= datetime.now(UTC) for e in events)
        await door.stop()
    run(scenario())


def test_only_wiring_changes_restart_the_doors():
    """Timing is applied in place on reload; pins, drivers, polarity, mode and the set of doors restart."""
    from doorphoned.app.config import load_default
    from doorphoned.core.bus import EventBus
    from doorphoned.core.clock import SystemClock
    from doorphoned.relay.feature import DoorsFeature

    feature = DoorsFeature(load_default(env={}), EventBus(), SystemClock())

    def restart(**env: str) -> bool:
        return feature.needs_restart(load_default(env=env))

    assert not restart(DOORPHONED_DOORS_2_HOLD_TIME="7", DOORPHONED_DOORS_1_TRIGGER_DELAY="1",
                       DOORPHONED_DOORS_1_DTMF_CODE="9", DOORPHONED_DOORS_2_NAME="Dock",
                       DOORPHONED_DOORS_1_HELD_OPEN_ALARM="5", DOORPHONED_DOORS_1_RELOCK_ON_CLOSE="true")
    assert restart(DOORPHONED_DOORS_1_RELAY_ACTIVE_LEVEL="low")
    assert restart(DOORPHONED_DOORS_1_RELAY_PIN="40")
    assert restart(DOORPHONED_DOORS_1_MODE="bistable")
    assert restart(DOORPHONED_GPIO_PIN_FACTORY="mock")
    assert restart(DOORPHONED_TAMPER_ACTIVE_LEVEL="low")


def test_a_stopped_door_leaves_no_timer_or_task(factory):
    """A relock or alarm timer that outlived its door would move a relay of a door that no longer exists."""
    async def scenario():
        clock = FixedClock(START)
        door, events = await make_door(factory, clock, held_open_alarm=30, relock_on_close=True, hold_time=5)
        await door.open()
        factory.pin(5).drive_high()
        await clock.run_for(0)
        assert clock.pending()  # the relock and the held-open alarm
        await door.stop()
        assert clock.pending() == [] and door._own.owned() == ([], [])
        before = len(events)
        await clock.run_for(3600)
        assert len(events) == before
    run(scenario())
