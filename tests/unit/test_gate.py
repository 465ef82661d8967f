"""The gate's order of effects and its storage-failure policy, with a real SQLite store and MockFactory pins."""

from __future__ import annotations

import asyncio
import sqlite3
from zoneinfo import ZoneInfo

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.devicekey import DeviceKey
from doorphoned.access.gate import AccessGate
from doorphoned.app.config import load_default
from doorphoned.cloud.feature import event_body
from doorphoned.cloud.outbox import Outbox
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import SystemClock
from doorphoned.core.events import AccessDecided
from doorphoned.core.lockout import LockoutPolicy
from doorphoned.core.presentations import ExitButton, InstallerOpen
from doorphoned.core.store import Store
from doorphoned.relay.feature import DoorsFeature


class BrokenStore(Store):
    """A store whose disk has failed (as sqlite reports a full or read-only disk)."""

    def append_door_log(self, entry):
        raise sqlite3.OperationalError("database or disk is full")


async def doors_and_gate(store: Store, bus: EventBus | None = None, clock=None, creds_type=CredentialStore,
                         lockout: LockoutPolicy | None = None) -> tuple[DoorsFeature, AccessGate]:
    """Mock-pin doors started and a gate over ``store`` (the caller stops the doors)."""
    config = load_default(env={"DOORPHONED_GPIO_PIN_FACTORY": "mock"})
    bus = bus or EventBus()
    clock = clock or SystemClock()
    doors = DoorsFeature(config, bus, clock)
    await doors.start()
    gate = AccessGate(creds_type(store, DeviceKey(b"k" * 32)), bus, clock, doors, lambda: ZoneInfo("UTC"),
                      lockout or LockoutPolicy())
    return doors, gate


def run_gate(store: Store, credential, door: int, recorder=None):
    async def scenario():
        bus = EventBus()
        published = []
        bus.subscribe(AccessDecided, published.append, "test")
        doors, gate = await doors_and_gate(store, bus)
        factory = doors.pin_factory
        order = []
        real_open = doors.doors[door].open

        async def traced_open():
            counted = None if isinstance(store, BrokenStore) else store.door_log_count()
            outbox = store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] if recorder else None
            order.append(("actuate", counted) if recorder is None else ("actuate", counted, outbox))
            await real_open()

        doors.doors[door].open = traced_open
        if recorder is not None:
            gate.add_recorder(recorder)
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


def test_the_cloud_copy_is_stored_with_the_record_before_the_relay_moves(tmp_path):
    """A kill -9 between persist and publish must not lose the access event (bench/chaos.py found it)."""
    store = Store(tmp_path / "db.sqlite")
    store.open()
    outbox = Outbox(store.db, 100)

    def record(event):
        outbox.add(f"e{event.log_id}", *event_body(event))

    result, relay_on, order, published = run_gate(store, InstallerOpen(0), 1, record)
    assert result.opened and relay_on
    assert order == [("actuate", 1, 1)]  # entry and event both committed when the door was told to open
    [pending] = outbox.pending(0, 10)
    assert pending.type == "access" and pending.body["log_id"] == published[0].log_id
    assert published[0].stored  # the cloud feature does not add it a second time


def test_an_event_that_cannot_be_stored_refuses_like_a_record_that_cannot(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.open()

    def full(event):
        raise sqlite3.OperationalError("database or disk is full")

    result, relay_on, order, published = run_gate(store, InstallerOpen(0), 1, full)
    assert not result.opened and result.error_reason == "storage" and not relay_on and order == []
    assert store.door_log_count() == 0 and not published  # rolled back together


def test_a_rolled_back_record_tells_the_recorder_to_count_again(tmp_path):
    """The outbox row was added, then the commit failed: its depth must not keep counting it."""
    store = BrokenStore(tmp_path / "db.sqlite")
    store.open()
    outbox = Outbox(store.db, 100)
    outbox.depth = 7  # as if rows of a rolled-back transaction were counted
    gate_calls = []

    async def scenario():
        doors, gate = await doors_and_gate(store)
        remove = gate.add_recorder(gate_calls.append, outbox.recount)
        result = await gate.request(InstallerOpen(0), 1)
        remove()
        await gate.request(InstallerOpen(0), 1)
        await doors.stop()
        return result

    result = asyncio.run(scenario())
    assert not result.opened and outbox.depth == 0 and gate_calls == []


def test_a_lockout_that_cannot_be_saved_does_not_kill_the_reader(tmp_path):
    """Disk full: the wrong PIN is refused and the keypad task goes on (it died in bench/chaos.py)."""
    from doorphoned.core.presentations import PinEntry

    class FullCredentialStore(CredentialStore):
        def save_lockout(self, source, state):
            raise sqlite3.OperationalError("database or disk is full")

    store = Store(tmp_path / "db.sqlite")
    store.open()

    async def scenario():
        doors, gate = await doors_and_gate(store, creds_type=FullCredentialStore)
        results = await gate.present(PinEntry("97531", "keypad"), [1])
        await doors.stop()
        return results

    [result] = asyncio.run(scenario())
    assert not result.opened and result.decision.reason.value == "unknown"


def test_the_keypad_lockout_alarm_clears_on_the_clock_and_resumes_after_a_restart(tmp_path):
    """Five wrong PINs lock the keypad for 30 s; its alarm clears then, also across an access restart,
    and never from a timer of the stopped feature (which would clear it twice)."""
    from datetime import UTC, datetime

    from doorphoned.access.gate import AccessFeature
    from doorphoned.core.clock import FixedClock
    from doorphoned.core.events import AlarmChanged
    from doorphoned.core.presentations import PinEntry

    store = Store(tmp_path / "db.sqlite")
    store.open()

    async def scenario() -> list[tuple[bool, float]]:
        clock = FixedClock(datetime(2026, 11, 23, 12, tzinfo=UTC))
        bus = EventBus()
        alarms: list[tuple[bool, float]] = []
        bus.subscribe(AlarmChanged, lambda a: alarms.append((a.active, clock.monotonic())), "test")
        doors, gate = await doors_and_gate(store, bus, clock, lockout=LockoutPolicy(failures=5, first=30.0))
        access = AccessFeature(bus, gate)
        await access.start()
        for _ in range(5):
            await gate.present(PinEntry("97531", "keypad"), [1])
        await clock.run_for(10)
        await access.stop()
        assert clock.pending() == []
        await access.start()  # 20 s left: the alarm still clears on time
        await clock.run_for(19.9)
        assert alarms == [(True, 1000.0)]
        await clock.run_for(0.1)
        await access.stop()
        await doors.stop()
        return alarms

    alarms = asyncio.run(scenario())
    store.close()
    assert alarms == [(True, 1000.0), (False, 1030.0)]


def test_bulk_work_waiting_for_quiet_runs_only_between_door_requests(tmp_path):
    """A snapshot's slices wait for `quiet()`: while a door request is between its turns of the loop (here
    held inside the lock driver), the waiter does not run; it runs once the request has finished."""
    store = Store(tmp_path / "db.sqlite")
    store.open()

    async def scenario():
        doors, gate = await doors_and_gate(store)
        in_driver, release = asyncio.Event(), asyncio.Event()
        real_open = doors.doors[1].open

        async def slow_open():
            in_driver.set()
            await release.wait()
            await real_open()

        doors.doors[1].open = slow_open
        await gate.quiet()  # nothing in progress: returns at once
        request = asyncio.create_task(gate.request(InstallerOpen(0), 1))
        await in_driver.wait()
        waiter = asyncio.create_task(gate.quiet())
        for _ in range(20):
            await asyncio.sleep(0)
        held = not waiter.done()
        release.set()
        result = await request
        await asyncio.wait_for(waiter, 5)
        await doors.stop()
        return held, result.opened

    held, opened = asyncio.run(scenario())
    assert held and opened


def test_a_keypad_entry_is_one_read_of_its_lockout_and_one_record_transaction(tmp_path):
    """The walk of a PIN: decide reads the lock-out once; the entry, the lock-out and (for a temp key) the
    use and the uses left are written in one transaction before the door moves; nothing is read back."""
    from datetime import UTC, datetime, timedelta

    from doorphoned.access.decide import TempKeyRecord
    from doorphoned.core.events import TempKeyUsed
    from doorphoned.core.presentations import PinEntry

    store = Store(tmp_path / "db.sqlite")
    store.open()
    statements: list[str] = []

    async def scenario() -> tuple[list, list[TempKeyUsed]]:
        bus = EventBus()
        used: list[TempKeyUsed] = []
        bus.subscribe(TempKeyUsed, used.append, "test")
        doors, gate = await doors_and_gate(store, bus, lockout=LockoutPolicy(failures=5, first=30.0))
        now = datetime.now(UTC)
        key = TempKeyRecord("k-1", "Courier", frozenset({1}), "never", now - timedelta(hours=1),
                            now + timedelta(hours=1), each_door_counts=3)
        gate._creds.add_temp_key(key, "24681357", now)
        store.db.set_trace_callback(statements.append)
        wrong = await gate.present(PinEntry("97531", "keypad"), [1])
        wrong_statements = list(statements)
        statements.clear()
        right = await gate.present(PinEntry("24681357", "keypad"), [1])
        store.db.set_trace_callback(None)
        await doors.stop()
        assert not wrong[0].opened and right[0].opened
        return [wrong_statements, list(statements)], used

    (wrong, right), used = asyncio.run(scenario())
    for walk in (wrong, right):
        assert sum(s.startswith("BEGIN") for s in walk) == 1, walk  # one record transaction
        assert sum("FROM lockouts" in s for s in walk) == 1, walk  # the lock-out read once, by decide
    assert any("INSERT INTO lockouts" in s for s in wrong)  # the failure counted in that transaction
    assert any("INSERT INTO lockouts" in s for s in right)  # and the streak ended by the valid PIN
    assert sum("FROM key_uses" in s for s in right) == 1  # decide's check; the uses left come from the record
    assert [(u.key_id, u.uses_left) for u in used] == [("k-1", 2)]
    assert store.db.execute("SELECT uses FROM key_uses").fetchall() == [(1,)]


def test_a_face_opens_by_its_users_rules_and_only_user_id_and_distance_leave(tmp_path):
    """FaceMatch (issue 12): the user's doors apply; the door log and the cloud event carry the distance and the
    user id, nothing else of the face."""
    from datetime import UTC, datetime

    from doorphoned.access.decide import UserRecord
    from doorphoned.core.presentations import FaceMatch

    store = Store(tmp_path / "db.sqlite")
    store.open()
    creds = CredentialStore(store, DeviceKey(b"k" * 32))
    creds.add_user(UserRecord("u1", "Barack", doors=frozenset({1})), datetime(2026, 1, 1, tzinfo=UTC))
    result, relay_on, _, published = run_gate(store, FaceMatch("u1", 0.31234), 1)
    assert result.opened and relay_on
    entry = store.door_log(1)[0]
    assert (entry.credential, entry.user_id, entry.detail) == ("face", "u1", {"distance": 0.3123, "capture_id": None})
    name, body = event_body(published[0])
    assert name == "access" and body["distance"] == 0.3123 and body["user_id"] == "u1"
    assert set(body) == {"ts", "door", "credential", "subject", "granted", "reason", "user_id", "key_id", "log_id",
                         "distance"}
    result, relay_on, _, _ = run_gate(store, FaceMatch("u1", 0.3), 2)
    assert not result.opened and result.reason == "door_not_allowed"
    result, _, _, published = run_gate(store, FaceMatch(None, 0.81), 1)
    assert result.reason == "unknown" and published[0].user_id is None and published[0].distance == 0.81
    result, _, _, _ = run_gate(store, FaceMatch("u1", 0.3, liveness="no_blink"), 1)
    assert result.reason == "liveness" and not result.opened
