"""The outbox on a real SQLite file: a folded run of refusals is one summary event that survives a restart, and
an overflow takes ordinary events before any alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from doorphoned.access.credstore import CredentialStore, Recorded
from doorphoned.access.devicekey import DeviceKey
from doorphoned.cloud.folds import FoldedRuns
from doorphoned.cloud.outbox import Outbox
from doorphoned.core.store import COLLAPSE_GAP, DoorLogEntry, Store

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # never compared with the wall clock


def open_all(tmp_path) -> tuple[Store, CredentialStore, Outbox, FoldedRuns]:
    store = Store(tmp_path / "db.sqlite")
    store.open()
    store.migrate()
    creds = CredentialStore(store, DeviceKey(b"k" * 32))
    outbox = Outbox(store.db, 1000)
    return store, creds, outbox, FoldedRuns(store.db, store, outbox)


def refuse(creds: CredentialStore, folds: FoldedRuns, outbox: Outbox, seconds: float) -> tuple[int, bool]:
    """What the gate and the cloud recorder do with one wrong PIN, in one transaction."""
    entry = DoorLogEntry(ts=T0 + timedelta(seconds=seconds), kind="access", door=1, credential="pin",
                         subject="PIN at keypad", granted=False, reason="unknown")
    seen: list[tuple[int, bool]] = []

    def then(recorded: Recorded) -> None:
        log_id, folded = recorded.log_id, recorded.folded
        seen.append((log_id, folded))
        if folded:
            folds.hold(log_id, 1, "pin", entry.ts.timestamp())
        else:
            outbox.add(f"e{seconds}", "access", {"log_id": log_id})

    creds.record_access(entry, then=then)
    return seen[0]


def test_a_run_is_one_event_then_one_summary_that_a_restart_keeps(tmp_path):
    store, creds, outbox, folds = open_all(tmp_path)
    log_id, folded = refuse(creds, folds, outbox, 0)
    assert not folded
    assert [refuse(creds, folds, outbox, s) for s in (1, 2, 3)] == [(log_id, True)] * 3
    assert outbox.depth == 1 and folds.held() == 1
    assert folds.end_due((T0 + timedelta(seconds=3 + COLLAPSE_GAP - 1)).timestamp()) == 0  # still open
    store.close()

    store, creds, outbox, folds = open_all(tmp_path)  # a restart: the held run is still there
    assert folds.next_due() == (T0 + timedelta(seconds=3 + COLLAPSE_GAP)).timestamp()
    assert folds.end_due(folds.next_due() or 0) == 1
    [first, summary] = outbox.pending(0, 10)
    assert first.body == {"log_id": log_id}
    assert summary.type == "access" and summary.body["log_id"] == log_id and summary.body["count"] == 4
    assert summary.body["first"] == T0.isoformat() < summary.body["last"] == summary.body["ts"]
    assert folds.held() == 0 and store.door_log(limit=1)[0].detail["closed"] is True
    new_id, folded = refuse(creds, folds, outbox, 4)  # a closed entry takes no more repeats
    assert new_id != log_id and not folded


def test_a_grant_ends_the_runs_of_its_source_only(tmp_path):
    _, creds, outbox, folds = open_all(tmp_path)
    refuse(creds, folds, outbox, 0)
    refuse(creds, folds, outbox, 1)
    with creds.transaction():
        assert folds.end_source(1, "card") == 0 and folds.end_source(2, "pin") == 0
        assert folds.end_source(1, "pin") == 1
    assert outbox.pending(0, 10)[-1].body["count"] == 2 and folds.held() == 0


def test_an_overflow_drops_the_oldest_ordinary_events_and_alarms_only_when_nothing_else_is_left(tmp_path):
    store, _, _, _ = open_all(tmp_path)
    outbox = Outbox(store.db, 1000)
    outbox.add("alarm-1", "alarm", {"kind": "forced_open"})
    outbox.add("fault-1", "lock_fault", {"door": 1})
    for i in range(1500):
        outbox.add(f"a{i}", "access", {"n": i})
    kept = outbox.pending(0, 2000)
    assert [e.id for e in kept[:3]] == ["alarm-1", "fault-1", "a502"] and outbox.dropped() == 502
    for i in range(1200):
        outbox.add(f"al{i}", "alarm", {"n": i})
    kept = outbox.pending(0, 2000)
    assert len(kept) == 1000 and all(e.type == "alarm" for e in kept) and kept[0].id == "al200"
