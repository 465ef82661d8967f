"""One door: its lock driver, timing (trigger delay, hold, mode), sensor, exit button and alarms."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock, Timer
from doorphoned.core.events import AlarmChanged, DoorStatusChanged, ExitButtonPressed, RelayChanged
from doorphoned.core.feature import Tracker
from doorphoned.core.inputs import InputLine
from doorphoned.core.ports import LockError
from doorphoned.relay.config import DoorConfig
from doorphoned.relay.driver import LockDriver
from doorphoned.relay.watch import DoorWatch

log = logging.getLogger(__name__)


WIRING_FIELDS = ("id", "lock", "mode", "relay", "sensor", "exit_button", "http")


def wiring(config: DoorConfig) -> tuple[object, ...]:
    """What a door cannot change without rebuilding its driver and lines (a restart to the safe state).

    ``mode`` belongs here: switching bistable/monostable with the lock unlocked would leave it so.
    """
    return tuple(getattr(config, name) for name in WIRING_FIELDS)


class Door:
    """Carries out grants on one door and watches it.

    ``open()`` returns once the lock is unlocked (after the trigger delay) or raises
    :class:`LockError`; the relock is timed on the loop (monostable) or waits for the next grant
    (bistable). Overlapping grants extend the hold instead of stacking pulses.
    """

    def __init__(self, config: DoorConfig, driver: LockDriver, bus: EventBus, clock: Clock) -> None:
        self.config = config
        self.driver = driver
        self._bus = bus
        self._clock = clock
        self.watch = DoorWatch(config.held_open_alarm, config.forced_open_grace)
        self._sensor: InputLine | None = None
        self._exit: InputLine | None = None
        self._relock: Timer | None = None
        self._tick: Timer | None = None
        self._own = Tracker(f"door {config.id}", clock)  # relock and alarm timers, relock tasks
        self._lock = asyncio.Lock()
        self.opened_since_unlock = False

    @property
    def id(self) -> int:
        return self.config.id

    async def start(self, pin_factory: Any) -> None:
        loop = asyncio.get_running_loop()
        await self.driver.start()
        await self.driver.lock()  # the safe state, whatever the line was before
        if self.config.sensor is not None:
            self._sensor = InputLine(self.config.sensor.pin, self.config.sensor.open_level, pin_factory, loop,
                                     self._on_sensor)
            self._on_sensor(self._sensor.active)
        if self.config.exit_button is not None:
            self._exit = InputLine(self.config.exit_button.pin, self.config.exit_button.pressed_level,
                                   pin_factory, loop, self._on_exit)

    def reconfigure(self, config: DoorConfig) -> None:
        """Take new timing and behaviour (hold time, trigger delay, alarms, name, DTMF code) in place.

        Wiring (pins, driver, polarity, mode) is not changed here: :func:`wiring` tells the doors
        feature when it must restart instead. The next grant uses the new times; one in progress
        keeps the relock it already has.
        """
        self.config = config
        self.watch.held_open_after = config.held_open_alarm
        self.watch.grace = config.forced_open_grace
        self.driver.set_hold_time(config.hold_time)

    async def stop(self) -> None:
        await self._own.cancel_all()
        self._relock = self._tick = None
        for line in (self._sensor, self._exit):
            if line is not None:
                line.close()
        self._sensor = self._exit = None
        try:
            await self.driver.lock()  # safe state at stop
        except LockError as exc:  # e.g. the board is gone: it has released the line itself
            log.error("door %d: could not lock at stop: %s", self.id, exc.detail)
        finally:
            await self.driver.close()

    # ---- grants
    async def open(self) -> None:
        cfg = self.config
        if fault := self.driver.fault():  # checked first: a lock already held open may no longer be
            raise LockError("board_unreachable", fault)
        self.watch.authorise(self._clock.monotonic(), cfg.trigger_delay + cfg.hold_time)
        if cfg.trigger_delay:
            await self._clock.sleep(cfg.trigger_delay)
        async with self._lock:
            if cfg.mode == "bistable" and self.driver.unlocked:
                await self._set_locked()
                return
            if not self.driver.unlocked:
                await self.driver.unlock()
                self._lock_changed(True)
            if cfg.mode == "monostable":
                self._schedule_relock(cfg.hold_time)

    async def pulse(self, seconds: float) -> None:
        """Unlock for ``seconds`` regardless of mode (``relay test``)."""
        self.watch.authorise(self._clock.monotonic(), seconds)
        async with self._lock:
            if not self.driver.unlocked:
                await self.driver.unlock()
                self._lock_changed(True)
            self._schedule_relock(seconds)

    def _schedule_relock(self, seconds: float) -> None:
        """Relock ``seconds`` from now, unless an earlier grant already holds the lock open longer."""
        if self._relock is not None:
            if self._relock.when() >= self._clock.monotonic() + seconds:
                return
            self._relock.cancel()
        self._relock = self._own.later(seconds, self._relock_due)

    def _relock_due(self) -> None:
        self._own.spawn(self._timed_relock(), "relock")

    async def _timed_relock(self) -> None:
        self._relock = None
        async with self._lock:
            await self._set_locked()

    async def _set_locked(self) -> None:
        if self._relock is not None:
            self._relock.cancel()
            self._relock = None
        if self.driver.unlocked:
            try:
                await self.driver.lock()
            except LockError as exc:
                # The driver keeps the safe state to write when its hardware answers again (hw-sim and
                # boxes like it release their lines when the controller goes away).
                log.error("door %d: could not lock again: %s", self.id, exc.detail)
                if self.driver.unlocked:
                    raise
            self._lock_changed(False)

    def _lock_changed(self, unlocked: bool) -> None:
        self.watch.lock_changed(self._clock.monotonic(), unlocked)
        self.opened_since_unlock = False
        self._bus.publish(RelayChanged(self._clock.now(), self.id, unlocked))

    # ---- inputs (on the loop)
    def _on_exit(self, pressed: bool) -> None:
        if pressed:
            self._bus.publish(ExitButtonPressed(self._clock.now(), self.id))

    def _on_sensor(self, is_open: bool) -> None:
        changes = self.watch.sensor(self._clock.monotonic(), is_open)
        self._bus.publish(DoorStatusChanged(self._clock.now(), self.id, is_open))
        self._publish_alarms(changes)
        self._arm_tick()
        if is_open and self.driver.unlocked:
            self.opened_since_unlock = True
        elif not is_open and self.opened_since_unlock and self.config.relock_on_close:
            log.info("door %d closed after opening: relocking", self.id)
            self._own.spawn(self._relock_now(), "relock-on-close")

    async def _relock_now(self) -> None:
        async with self._lock:
            await self._set_locked()

    def _arm_tick(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        deadline = self.watch.next_deadline()
        if deadline is not None:
            self._tick = self._own.later(max(deadline - self._clock.monotonic(), 0), self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._publish_alarms(self.watch.tick(self._clock.monotonic()))
        self._arm_tick()

    def _publish_alarms(self, changes: list[Any]) -> None:
        for change in changes:
            self._bus.publish(AlarmChanged(self._clock.now(), change.kind, change.active, self.id, change.detail))

    # ---- reporting
    @property
    def is_open(self) -> bool | None:
        return self.watch.is_open

    def input_states(self) -> dict[str, Any]:
        return {
            "sensor": None if self._sensor is None else ("open" if self._sensor.active else "closed"),
            "exit_button": None if self._exit is None else ("pressed" if self._exit.active else "released"),
        }

    def describe(self) -> dict[str, Any]:
        """What ``status`` and ``relay list`` show; with the board lost every state is "unknown"
        (the last known one would be a guess presented as a fact)."""
        cfg = self.config
        fault = self.driver.fault()
        inputs = {k: (None if v is None else "unknown") for k, v in self.input_states().items()} if fault \
            else self.input_states()
        return {
            "door": self.id, "name": cfg.name, "lock": cfg.lock, "mode": cfg.mode,
            "trigger_delay": cfg.trigger_delay, "hold_time": cfg.hold_time,
            "state": "unknown" if fault else "unlocked" if self.driver.unlocked else "locked",
            "door_status": "unknown" if fault else {True: "open", False: "closed", None: "unknown"}[self.is_open],
            "fault": fault,
            "alarms": sorted(self.watch.active),
            "driver": self.driver.describe(),
            **inputs,
        }
