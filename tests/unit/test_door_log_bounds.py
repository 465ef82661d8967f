"""The door log under pressure, on a real SQLite file: repeated refusals fold into one entry with a count,
and pruning never takes an alarm to make room for ordinary entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from doorphoned.core.store import DoorLogEntry, Store

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # never compared with the wall clock


def refusal(seconds: float, reason: str = "locked_out", door: int = 1, subject: str = "PIN at keypad") -> DoorLogEntry:
    return DoorLogEntry(ts=T0 + timedelta(seconds=seconds), kind="access", door=door, credential="pin",
                        subject=subject, granted=False, reason=reason)


def record(store: Store, entry: DoorLogEntry) -> int:
    collapsed = store.collapse_refusal(entry)
    return collapsed if collapsed is not None else store.append_door_log(entry)


def open_store(tmp_path) -> Store:
    store = Store(tmp_path / "db.sqlite")
    store.open()
    store.migrate()
    return store


def test_a_burst_of_refusals_is_one_entry_per_kind_with_the_right_count_and_times(tmp_path):
    store = open_store(tmp_path)
    for i in range(3000):
        record(store, refusal(i * 0.01, "locked_out"))
        record(store, refusal(i * 0.01, "malformed" if i % 2 else "unknown"))
    entries = store.door_log(limit=100)
    assert sorted((e.reason, e.detail["count"]) for e in entries) == [
        ("locked_out", 3000), ("malformed", 1500), ("unknown", 1500)]
    locked = next(e for e in entries if e.reason == "locked_out")
    assert locked.ts == T0 and locked.detail["last"] == (T0 + timedelta(seconds=29.99)).isoformat()


def test_repeats_start_a_new_entry_after_a_pause_after_an_hour_or_for_another_source(tmp_path):
    store = open_store(tmp_path)
    first = record(store, refusal(0))
    assert record(store, refusal(59)) == first
    assert record(store, refusal(200)) != first  # more than a minute after the last repeat
    assert record(store, refusal(201, door=2)) != record(store, refusal(202, door=1, subject="card 04A1B2C3"))
    steady = [record(store, refusal(4000 + i * 30)) for i in range(240)]  # every 30 s for two hours
    assert 2 <= len(set(steady)) <= 3
    granted = DoorLogEntry(ts=T0, kind="access", door=1, credential="pin", subject="Alice", granted=True,
                           reason="granted")
    assert store.collapse_refusal(granted) is None


def test_a_replay_flood_of_one_phone_key_is_one_entry_and_another_key_is_another(tmp_path):
    """A recorded BLE advert re-sent in a loop is refused ``replayed`` about once a second: one entry."""
    store = open_store(tmp_path)

    def replayed(seconds: float, key: str) -> DoorLogEntry:
        return DoorLogEntry(ts=T0 + timedelta(seconds=seconds), kind="access", door=1, credential="ble",
                            subject=f"phone key {key}", granted=False, reason="replayed",
                            detail={"phone_key": key, "mode": "hands-free"})

    ids = {record(store, replayed(i, "cy-phone")) for i in range(600)}
    other = record(store, replayed(600, "di-phone"))
    assert len(ids) == 1 and other not in ids
    [entry] = [e for e in store.door_log(limit=10) if e.subject == "phone key cy-phone"]
    assert entry.detail["count"] == 600 and entry.detail["phone_key"] == "cy-phone"


def test_pruning_takes_ordinary_entries_first_and_alarms_only_beyond_their_own_budget(tmp_path):
    store = open_store(tmp_path)
    store.append_door_log(DoorLogEntry(ts=T0, kind="alarm", reason="forced_open", detail={"active": True}))
    store.append_door_log(DoorLogEntry(ts=T0, kind="lock_fault", door=1, granted=False, reason="board_unreachable"))
    for i in range(5000):
        store.append_door_log(DoorLogEntry(ts=T0 + timedelta(seconds=i), kind="door_status", door=1, reason="open"))
    assert store.prune_door_log(1000, 1000) == 4000
    kinds = [e.kind for e in store.door_log(limit=10_000)]
    assert kinds.count("door_status") == 1000 and {"alarm", "lock_fault"} <= set(kinds)
    for i in range(1500):
        store.append_door_log(DoorLogEntry(ts=T0, kind="alarm", reason="tamper", detail={"n": i}))
    store.prune_door_log(1000, 1000)
    alarms = store.door_log(limit=10_000, kind="alarm")
    assert len(alarms) == 1000 and alarms[0].detail == {"n": 1499}  # the newest alarms stay
    assert len(store.door_log(limit=10_000, kind="door_status")) == 1000
