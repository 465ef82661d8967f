"""The gate's order of effects and its storage-failure policy, with a real SQLite store and MockFactory pins."""

from __future__ import annotations

import asyncio
import sqlite3
from zoneinfo import ZoneInfo

from doorphoned.access import ExitButton, InstallerOpen
from doorphoned.bus import EventBus
from doorphoned.clock import SystemClock
from doorphoned.config import load_default
from doorphoned.credstore import CredentialStore
from doorphoned.devicekey import DeviceKey
from doorphoned.events import AccessDecided
from doorphoned.gate import AccessGate
from doorphoned.lockout import LockoutPolicy
from doorphoned.relay.feature import DoorsFeature
from doorphoned.store import Store


class BrokenStore(Store):
    """A store whose disk has failed (as sqlite reports a full or read-only disk)."""

    def append_door_log(self, entry):
        raise sqlite3.OperationalError("database or disk is full")


def run_gate(store: Store, credential, door: int):
    async def scenario():
        config = load_default(env={"DOORPHONED_GPIO_PIN_FACTORY": "mock"})
        bus = EventBus()
        published = []
        bus.subscribe(AccessDecided, published.append, "test")
        doors = DoorsFeature(config, bus, SystemClock())
        await doors.start()
        factory = doors.pin_factory
        order = []
        real_open = doors.doors[door].open

        async def traced_open():
            order.append(("actuate", store.door_log_count() if not isinstance(store, BrokenStore) else None))
            await real_open()

        doors.doors[door].open = traced_open
        creds = CredentialStore(store, DeviceKey(b"k" * 32))
        gate = AccessGate(creds, bus, SystemClock(), doors, lambda: ZoneInfo("UTC"), LockoutPolicy())
        result = await gate.request(credential, door)
        relay_on = factory.pin(17 if door == 1 else 27).state == 1
        await doors.stop()
        return result, relay_on, order, published
    return asyncio.run(scenario())


def test_grant_is_persisted_before_the_relay_moves_then_published(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()
    result, relay_on, order, published = run_gate(store, InstallerOpen(0), 1)
    assert result.opened and relay_on
    assert order == [("actuate", 1)]  # the record was already there when the door was told to open
    assert [p.log_id for p in published] == [store.door_log(limit=1)[0].id]


def test_storage_failure_denies_an_ordinary_open(tmp_path):
    store = BrokenStore(tmp_path / "db.sqlite")
    store.open()
    result, relay_on, order, _ = run_gate(store, InstallerOpen(0), 1)
    assert not result.opened and result.error_reason == "storage" and not relay_on and order == []


def test_storage_failure_never_traps_anyone_inside(tmp_path):
    store = BrokenStore(tmp_path / "db.sqlite")
    store.open()
    result, relay_on, _, published = run_gate(store, ExitButton(2), 2)
    assert result.opened and relay_on and published[0].granted
