"""Credential sync rules and run-time settings on a real SQLite store (no broker, no daemon)."""

from __future__ import annotations

import asyncio
import json
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.devicekey import DeviceKey
from doorphoned.access.sync import CredentialSync, ItemParser
from doorphoned.app.config import load_default
from doorphoned.cloud.tool import snapshot_parts
from doorphoned.core.clock import FixedClock
from doorphoned.core.commands import CommandError
from doorphoned.core.config import ConfigError
from doorphoned.core.events import SyncResult
from doorphoned.core.settings import OverrideError, admissible, check_changes, merge
from doorphoned.core.store import Store

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


class RecordedSettings:
    """Stands in for the daemon's run-time settings: checks against the embedded default config."""

    def __init__(self) -> None:
        self.applied: list[tuple[dict, str]] = []

    def check(self, changes: dict, prefix: str) -> None:
        try:
            load_default(env={}, overrides=merge({}, changes, prefix))
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc

    async def apply(self, changes: dict, prefix: str) -> None:
        self.applied.append((changes, prefix))


class Harness:
    def __init__(self, tmp_path) -> None:
        store = Store(tmp_path / "db.sqlite")
        store.open()
        self.creds = CredentialStore(store, DeviceKey.load_or_create(tmp_path / "device.key"))
        self.published: list[SyncResult] = []
        self.settings = RecordedSettings()
        parser = ItemParser(frozenset({1, 2}), zoneinfo.ZoneInfo("Europe/Berlin"))
        self.sync = CredentialSync(self.creds, FixedClock(NOW), lambda: parser, self.settings, self.published.append)

    def run(self, coro):
        return asyncio.run(coro)


def user(i: int, **extra) -> dict:
    return {"user_id": f"u{i}", "name": f"User {i}", "pin": f"5{i:03d}7", "cards": [f"04{i:06X}"], **extra}


def tkey(key_id: str, pin: str, count: int = 3) -> dict:
    return {"key_id": key_id, "name": "K", "doors": [1], "pin": pin, "start": "2026-01-01T00:00",
            "end": "2030-01-01T00:00", "count": count}


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path)


def test_snapshot_parts_are_staged_until_the_last_arrives(h):
    first = h.run(h.sync.snapshot({"version": 3, "part": 1, "parts": 2, "users": [user(1)]}))
    assert first == {"version": 3, "staged": 1, "parts": 2}
    assert h.creds.get_user("u1") is None and h.sync.version is None
    done = h.run(h.sync.snapshot({"version": 3, "part": 2, "parts": 2, "users": [user(2)]}))
    assert done["applied"]["users"] == 2 and h.sync.version == 3
    assert h.creds.user_by_card("04000002").id == "u2"
    assert [p.result for p in h.published] == ["applied"]


def test_a_new_version_discards_the_parts_of_an_unfinished_one(h):
    h.run(h.sync.snapshot({"version": 3, "part": 1, "parts": 2, "users": [user(1)]}))
    h.run(h.sync.snapshot({"version": 4, "users": [user(2)]}))
    assert h.creds.get_user("u1") is None and h.sync.version == 4


def local_user(h, user_id: str = "local") -> None:
    h.creds.add_user(ItemParser(frozenset({1}), zoneinfo.ZoneInfo("UTC")).user({"user_id": user_id,
                                                                               "name": "L"}).user, NOW)


def test_snapshot_removes_only_cloud_users_and_keeps_key_uses(h):
    local_user(h)
    h.run(h.sync.snapshot({"version": 1, "users": [user(1), user(2)], "temp_keys": [tkey("k1", "80412375")]}))
    h.creds.db.execute("INSERT INTO key_uses (key_id, door, uses) VALUES ('k1', 1, 2)")
    result = h.run(h.sync.snapshot({"version": 2, "users": [user(2)], "temp_keys": [tkey("k1", "80412375")]}))
    assert result["removed"]["users"] == 1
    assert h.creds.get_user("u1") is None and h.creds.user_by_card("04000001") is None
    assert h.creds.get_user("local") is not None
    assert h.creds.key_uses("k1", 1) == 2


def test_a_pin_in_use_is_left_off_and_the_rest_of_the_user_applies(h):
    result = h.run(h.sync.snapshot({"version": 1, "users": [user(1), user(2, pin="50017")]}))
    assert result["applied"]["users"] == 2
    [rejected] = result["rejected"]
    assert rejected["id"] == "u2" and rejected["error"].startswith("PIN left off") and "50017" not in str(result)
    assert h.creds.user_by_card("04000002").id == "u2" and h.creds.user_by_pin("50017").id == "u1"


@pytest.mark.parametrize(("body", "error"), [
    ({}, "version must be"), ({"version": 1, "users": "x"}, "users must be a list"),
    ({"version": 1, "users": [1]}, "must be an object"), ({"version": 1, "colour": 1}, "unknown field"),
    ({"version": 1, "part": 3, "parts": 2}, "part must be"), ({"version": 1, "users": [user(1, pin="1111")]}, "easy"),
    ({"version": 1, "doors": {"1": {"relay": {"pin": 4}}}}, "cannot be set at run time"),
    ({"version": 1, "doors": {"9": {"name": "x"}}}, "no door"),
    ({"version": 1, "doors": {"²": {"name": "x"}}}, "no door"),
    ({"version": 1, "doors": {"1": {"hold_time": 99}}}, "hold_time"),
    ({"version": 1, "users": [user(1, enabeld=False)]}, "unknown field 'enabeld'"),
])
def test_malformed_snapshots_change_nothing(h, body, error):
    with pytest.raises(CommandError, match=error):
        h.run(h.sync.snapshot(body))
    assert h.sync.version is None and h.creds.counts()["users"] == 0
    assert h.creds.db.execute("SELECT count(*) FROM sync_parts").fetchone()[0] == 0


def test_delta_gap_requests_a_snapshot_and_old_deltas_are_no_ops(h):
    h.run(h.sync.snapshot({"version": 5}))
    h.run(h.sync.delta({"from_version": 5, "version": 6, "upsert": {"users": [user(1)]}}))
    assert h.run(h.sync.delta({"from_version": 5, "version": 6})) == {"version": 6, "already_applied": True}
    with pytest.raises(CommandError, match="version gap"):
        h.run(h.sync.delta({"from_version": 7, "version": 8, "upsert": {"users": [user(2)]}}))
    assert h.published[-1].result == "snapshot_requested" and h.published[-1].version == 6
    assert h.creds.get_user("u2") is None and h.sync.version == 6


def test_delta_before_any_snapshot_asks_for_one(h):
    with pytest.raises(CommandError, match="the unit is at None"):
        h.run(h.sync.delta({"from_version": 0, "version": 1}))
    assert h.published[-1].result == "snapshot_requested"


def test_named_schedule_change_reaches_its_users_and_cannot_vanish_under_them(h):
    h.run(h.sync.snapshot({"version": 1, "schedules": [{"schedule_id": "day", "windows": ["mon-fri 08:00-18:00"]}],
                           "users": [user(1, schedule_id="day")]}))
    assert h.creds.get_user("u1").windows[0].days == frozenset(range(5))
    h.run(h.sync.delta({"from_version": 1, "version": 2,
                        "upsert": {"schedules": [{"schedule_id": "day", "windows": ["sat-sun 10:00-12:00"]}]}}))
    assert h.creds.get_user("u1").windows[0].days == frozenset({5, 6})
    result = h.run(h.sync.delta({"from_version": 2, "version": 3, "remove": {"schedules": ["day"]}}))
    assert result["rejected"][0]["id"] == "day" and "still used" in result["rejected"][0]["error"]


def test_delta_user_without_pin_keeps_it_snapshot_user_without_pin_loses_it(h):
    h.run(h.sync.snapshot({"version": 1, "users": [user(1)]}))
    h.run(h.sync.delta({"from_version": 1, "version": 2, "upsert": {"users": [{"user_id": "u1", "name": "New"}]}}))
    assert h.creds.user_by_pin("50017").name == "New"
    h.run(h.sync.snapshot({"version": 3, "users": [{"user_id": "u1", "name": "New"}]}))
    assert h.creds.user_by_pin("50017") is None and h.creds.user_by_card("04000001") is None


def test_snapshot_parts_fit_the_limit_and_keep_every_item():
    snapshot = {"version": 1, "doors": {"1": {"name": "A"}}, "users": [user(i) for i in range(300)],
                "temp_keys": [tkey(f"k{i}", f"8{i:07d}") for i in range(50)]}
    parts = snapshot_parts(snapshot, 4000)
    assert len(parts) > 5 and parts[0]["doors"] == {"1": {"name": "A"}}
    assert all(len(json.dumps(p)) < 4000 for p in parts)
    assert [u for p in parts for u in p.get("users", [])] == snapshot["users"]
    assert sum(len(p.get("temp_keys", [])) for p in parts) == 50


def test_run_time_settings_allow_list_and_merge():
    assert check_changes({"doors.2.hold_time": 4, "site.name": "Lobby"})
    for key in ("cloud.url", "daemon.state_dir", "doors.1.relay.pin", "doors.17.name", "control.socket", "gpio.x"):
        with pytest.raises(OverrideError, match="cannot be set"):
            check_changes({key: 1})
    assert merge({"a.b": 1, "doors.1.name": "x"}, {"a.b": None, "c.d": 2}) == {"doors.1.name": "x", "c.d": 2}
    assert merge({"doors.1.name": "x", "site.name": "s"}, {}, "doors.") == {"site.name": "s"}


def test_overrides_go_over_the_file_and_the_environment_over_them():
    config = load_default(env={}, overrides={"doors.2.hold_time": 7, "site.name": "Lobby"})
    assert config.door(2).hold_time == 7 and config.site.name == "Lobby"
    config = load_default(env={"DOORPHONED_DOORS_2_HOLD_TIME": "2"}, overrides={"doors.2.hold_time": 7})
    assert config.door(2).hold_time == 2
    with pytest.raises(ConfigError, match=r"doors\[1\].hold_time.*override doors.2.hold_time"):
        load_default(env={}, overrides={"doors.2.hold_time": 70})


def test_a_snapshot_interrupted_after_its_last_part_is_finished_at_start(h, tmp_path):
    # As after a power cut: every part staged and acknowledged, nothing applied yet.
    h.sync._stage(8, 1, 2, {"version": 8, "part": 1, "parts": 2, "users": [user(1)]})
    h.sync._stage(8, 2, 2, {"version": 8, "part": 2, "parts": 2, "users": [user(2)]})
    h.run(h.sync.resume())
    assert h.sync.version == 8 and h.creds.user_by_card("04000002").id == "u2"
    assert h.creds.db.execute("SELECT count(*) FROM sync_parts").fetchone()[0] == 0


def test_an_unfinished_snapshot_waits_for_its_missing_parts(h):
    h.sync._stage(8, 1, 2, {"version": 8, "part": 1, "parts": 2, "users": [user(1)]})
    h.run(h.sync.resume())
    assert h.sync.version is None and h.creds.get_user("u1") is None
    done = h.run(h.sync.snapshot({"version": 8, "part": 2, "parts": 2, "users": [user(2)]}))
    assert done["applied"]["users"] == 2


def test_delta_changes_only_the_fields_it_carries(h):
    h.run(h.sync.snapshot({"version": 1, "schedules": [{"schedule_id": "day", "windows": ["mon-fri 08:00-18:00"]}],
                           "users": [user(1, enabled=False, doors=[1], schedule_id="day")]}))
    h.run(h.sync.delta({"from_version": 1, "version": 2, "upsert": {"users": [{"user_id": "u1", "name": "New"}]}}))
    renamed = h.creds.get_user("u1")
    assert (renamed.name, renamed.enabled, renamed.doors) == ("New", False, frozenset({1}))
    assert renamed.windows[0].days == frozenset(range(5)) and h.creds.user_schedule_id("u1") == "day"


def test_swapped_cards_and_pins_reach_their_new_owners(h):
    h.run(h.sync.snapshot({"version": 1, "users": [user(1), user(2)]}))
    swapped = [user(1, pin="50027", cards=["04000002"], enabled=False), user(2, pin="50017", cards=["04000001"])]
    result = h.run(h.sync.snapshot({"version": 2, "users": swapped}))
    assert result["rejected"] == []
    assert h.creds.user_by_card("04000002").id == "u1" and h.creds.user_by_pin("50017").id == "u2"
    assert h.creds.get_user("u1").enabled is False


def test_a_card_moving_from_a_dropped_user_to_a_new_one(h):
    h.run(h.sync.snapshot({"version": 1, "users": [user(1)]}))
    result = h.run(h.sync.snapshot({"version": 2, "users": [user(3, cards=["04000001"])]}))
    assert result["rejected"] == [] and h.creds.user_by_card("04000001").id == "u3"


def test_a_credential_held_by_another_user_is_left_off_the_rest_applies(h):
    local_user(h, "inst")
    h.creds.add_card("inst", "04AAAAAA", NOW)
    h.run(h.sync.snapshot({"version": 1, "users": [user(1)]}))
    result = h.run(h.sync.snapshot({"version": 2, "users": [user(1, cards=["04AAAAAA"], enabled=False)]}))
    [rejected] = result["rejected"]
    assert rejected["id"] == "u1" and "card 04AAAAAA left off" in rejected["error"]
    assert h.creds.get_user("u1").enabled is False and h.creds.user_by_card("04000001") is None
    assert h.creds.user_by_card("04AAAAAA").id == "inst"


def test_a_refused_record_fails_closed(h):
    h.run(h.sync.snapshot({"version": 1, "users": [user(1), user(2, pin="80412376")],
                           "temp_keys": [tkey("k1", "80412375")]}))
    result = h.run(h.sync.delta({"from_version": 1, "version": 2, "upsert": {
        "users": [user(1, schedule_id="nope")], "temp_keys": [tkey("k1", "80412376")]}}))
    assert {r["id"] for r in result["rejected"]} == {"u1", "k1"}
    assert h.creds.get_user("u1").enabled is False
    assert h.creds.get_key("k1").end <= h.creds.get_key("k1").start  # expired, its uses kept


def test_the_installers_users_and_keys_are_out_of_the_clouds_reach(h):
    local_user(h)
    h.creds.set_pin("local", "999999")
    result = h.run(h.sync.snapshot({"version": 1, "users": [user(1, user_id="local")]}))
    assert result["rejected"][0]["id"] == "local" and "installer" in result["rejected"][0]["error"]
    result = h.run(h.sync.delta({"from_version": 1, "version": 2, "remove": {"users": ["local"]}}))
    assert "installer" in result["rejected"][0]["error"]
    assert h.creds.user_by_pin("999999").id == "local"
    assert h.creds.source_of("users", "local") == "local"


def test_a_snapshot_without_doors_leaves_door_settings_alone(h):
    h.run(h.sync.snapshot({"version": 1}))
    h.run(h.sync.snapshot({"version": 2, "doors": {"1": {"hold_time": 4}}}))
    assert h.settings.applied == [({"doors.1.hold_time": 4}, "doors.")]


def test_staged_parts_keep_no_pin_in_the_clear(h):
    h.run(h.sync.snapshot({"version": 3, "part": 1, "parts": 2, "users": [user(1)],
                           "temp_keys": [tkey("k1", "80412375")]}))
    [body] = [r[0] for r in h.creds.db.execute("SELECT body FROM sync_parts")]
    assert b"50017" not in body and b"80412375" not in body and b"u1" not in body


def test_stale_settings_are_dropped_one_by_one():
    def load(overrides):
        return load_default(env={}, overrides=overrides)
    kept, dropped, config = admissible({"site.name": "Lobby", "doors.5.name": "gone", "doors.2.hold_time": 4},
                                       load)
    assert kept == {"site.name": "Lobby", "doors.2.hold_time": 4} and dropped == ["doors.5.name"]
    assert (config.site.name, config.door(2).hold_time) == ("Lobby", 4)


def test_a_doors_mode_is_not_settable_from_afar():
    with pytest.raises(OverrideError, match="cannot be set"):
        check_changes({"doors.1.mode": "bistable"})


def test_a_snapshot_yields_the_loop_between_slices_and_leaves_commits_durable(h, monkeypatch):
    """Door decisions share the loop: with no time left in a slice budget, every item is its own slice and the
    loop runs other work in between; afterwards the connection is back to synchronous=FULL."""
    monkeypatch.setattr("doorphoned.access.sync.SLICE_BUDGET", 0.0)
    ticks: list[int] = []

    async def scenario() -> dict:
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(1)
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        done = await h.sync.snapshot({"version": 3, "users": [user(i) for i in range(1, 41)]})
        stop.set()
        await task
        return done

    done = h.run(scenario())
    assert done["applied"]["users"] == 40 and h.sync.version == 3
    assert len(ticks) >= 40  # at least once per slice of one user
    assert h.creds.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_failing_slice_rolls_back_alone_and_restores_full_sync(h, monkeypatch):
    h.run(h.sync.snapshot({"version": 1, "users": [user(1)]}))

    def boom(item):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(h.sync, "_put_user_snapshot", boom)
    with pytest.raises(RuntimeError):
        h.run(h.sync.snapshot({"version": 2, "users": [user(2)]}))
    assert h.creds.db.execute("PRAGMA synchronous").fetchone()[0] == 2 and not h.creds.db.in_transaction
    assert h.sync.version == 1  # the version moves only after the last slice


def test_loop_first_shortens_the_switch_interval_while_any_worker_runs():
    import sys

    from doorphoned.access.sync import WORKER_SWITCH_INTERVAL, loop_first

    before = sys.getswitchinterval()
    with loop_first():
        assert sys.getswitchinterval() == pytest.approx(WORKER_SWITCH_INTERVAL)
        with loop_first():
            pass
        assert sys.getswitchinterval() == pytest.approx(WORKER_SWITCH_INTERVAL)  # the outer one still runs
    assert sys.getswitchinterval() == before


def test_a_snapshot_applies_with_its_items_frozen_frees_them_and_restores_the_switch_interval(h, monkeypatch):
    """While the slices run the parsed items are out of the collector's reach; each is freed once applied
    (reference counting: frozen or not), and Python's switch interval is back afterwards, failure included."""
    import gc
    import sys
    import weakref

    frozen_during: list[int] = []
    applied: list[weakref.ref] = []
    real = h.sync._put_user_snapshot

    def spy(item):
        frozen_during.append(gc.get_freeze_count())
        applied.append(weakref.ref(item))
        real(item)

    monkeypatch.setattr(h.sync, "_put_user_snapshot", spy)
    interval = sys.getswitchinterval()
    done = h.run(h.sync.snapshot({"version": 1, "users": [user(i) for i in range(1, 21)]}))
    assert done["applied"]["users"] == 20
    assert len(frozen_during) == 20 and min(frozen_during) > 0
    assert all(ref() is None for ref in applied)
    assert sys.getswitchinterval() == interval

    def boom(item):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(h.sync, "_put_user_snapshot", boom)
    with pytest.raises(RuntimeError):
        h.run(h.sync.snapshot({"version": 2, "users": [user(2)]}))
    assert sys.getswitchinterval() == interval


def test_each_slice_waits_for_door_requests_in_progress_and_a_busy_door_cannot_stall_it(h, monkeypatch):
    """Between slices the sync waits for the doors to be quiet (the gate's `quiet`), so a request's turns of
    the loop never queue behind fresh slices; a door that stays busy holds each slice back only
    DOORS_FIRST_MAX, so a keypad flood cannot stop a snapshot."""
    monkeypatch.setattr("doorphoned.access.sync.SLICE_BUDGET", 0.0)
    monkeypatch.setattr("doorphoned.access.sync.DOORS_FIRST_MAX", 0.01)
    asked: list[int] = []

    async def never_quiet() -> None:
        asked.append(1)
        await asyncio.Event().wait()

    h.sync._doors_quiet = never_quiet
    done = h.run(h.sync.snapshot({"version": 3, "users": [user(i) for i in range(1, 11)]}))
    assert done["applied"]["users"] == 10 and h.sync.version == 3
    assert len(asked) >= 10  # once per one-user slice


def test_an_applied_snapshots_parts_go_in_slices_and_leftovers_are_never_applied_again(h, monkeypatch):
    """The parts of a 20-part snapshot are deleted a few per slice after the version is committed; parts
    of the unit's own version left by a restart in the middle of that are dropped at start, not re-applied
    (here they would bring back a user the cloud removed since)."""
    monkeypatch.setattr("doorphoned.access.sync.PARTS_PER_SLICE", 3)
    for part in range(1, 21):
        h.run(h.sync.snapshot({"version": 4, "part": part, "parts": 20, "users": [user(part)]}))
    assert h.sync.version == 4 and h.creds.db.execute("SELECT count(*) FROM sync_parts").fetchone()[0] == 0
    h.sync._stage(4, 1, 1, {"version": 4, "part": 1, "parts": 1, "users": [user(99)]})  # left by a cut-short drop
    h.run(h.sync.resume())
    assert h.creds.get_user("u99") is None and h.sync.version == 4
    assert h.creds.db.execute("SELECT count(*) FROM sync_parts").fetchone()[0] == 0


def revocation(key_id: str, days: float = 2) -> dict:
    return {"key_id": key_id, "end": (NOW + timedelta(days=days)).isoformat()}


def test_revocations_arrive_in_any_part_and_in_deltas_and_only_their_end_drops_them(h):
    h.run(h.sync.snapshot({"version": 3, "part": 1, "parts": 2, "revoked": [revocation("tk-1")]}))
    assert not h.creds.is_revoked("tk-1")  # staged, not yet applied
    done = h.run(h.sync.snapshot({"version": 3, "part": 2, "parts": 2, "revoked": [revocation("tk-2", 0.5)]}))
    assert done["revoked"] == 2 and h.creds.is_revoked("tk-1") and h.creds.is_revoked("tk-2")
    # A later snapshot without them keeps them: a revocation is never withdrawn by omission.
    h.run(h.sync.snapshot({"version": 4}))
    assert h.creds.is_revoked("tk-1")
    delta = h.run(h.sync.delta({"from_version": 4, "version": 5, "revoke": [revocation("tk-3"), revocation("tk-1")]}))
    assert delta["revoked"] == 1  # tk-1 was there already
    assert h.creds.revoke("tk-old", int((NOW - timedelta(days=1)).timestamp()), "sync", NOW) is False  # ended
    assert h.creds.prune_signed(NOW + timedelta(days=1)) == (1, 0)  # tk-2 ended half a day ago
    assert not h.creds.is_revoked("tk-2") and h.creds.is_revoked("tk-1")


def test_a_full_revocation_list_refuses_rather_than_forgets(h, monkeypatch):
    monkeypatch.setattr("doorphoned.access.credstore.MAX_REVOCATIONS", 2)
    done = h.run(h.sync.snapshot({"version": 1, "revoked": [revocation(f"tk-{i}") for i in range(3)]}))
    assert done["revoked"] == 2 and done["rejected"][0]["kind"] == "revoked"
    assert "full" in done["rejected"][0]["error"]
    assert h.creds.revocation_count() == 2


@pytest.mark.parametrize("bad", [
    {"revoked": [{"key_id": "tk-1"}]}, {"revoked": [{"key_id": "tk 1", "end": "2030-01-01T00:00Z"}]},
    {"revoked": {"key_id": "tk-1"}}, {"revoked": [{"key_id": "tk-1", "end": "2030-01-01T00:00Z", "x": 1}]},
    {"signing_keys": ["not a pem"]}, {"signing_keys": "pem"},
])
def test_malformed_revocations_or_signing_keys_refuse_the_whole_snapshot(h, bad):
    with pytest.raises(CommandError):
        h.run(h.sync.snapshot({"version": 1, "users": [user(1)], **bad}))
    assert h.creds.get_user("u1") is None and h.sync.version is None and h.creds.revocation_count() == 0


def test_snapshot_parts_carry_revocations_and_signing_keys():
    snapshot = {"version": 1, "signing_keys": ["PEM"], "revoked": [revocation(f"tk-{i}") for i in range(200)],
                "users": [user(i) for i in range(20)]}
    parts = snapshot_parts(snapshot, 3000)
    assert parts[0]["signing_keys"] == ["PEM"] and all("signing_keys" not in p for p in parts[1:])
    assert [r for p in parts for r in p.get("revoked", [])] == snapshot["revoked"]
    assert all(len(json.dumps(p)) < 3000 for p in parts)


def _phone_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_phone_keys_travel_with_the_user_delta_keeps_them_snapshot_without_them_drops_them(h):
    phone = {"id": "ph-1", "public_key": _phone_pem(), "modes": ["nfc", "tap"], "expires": "2030-01-01T00:00"}
    h.run(h.sync.snapshot({"version": 1, "users": [user(1, phone_keys=[phone])]}))
    [key] = h.creds.phone_keys("u1")
    assert (key.id, key.modes, key.source) == ("ph-1", frozenset({"nfc", "tap"}), "cloud")
    assert key.expires is not None and key.expires.utcoffset() is not None  # read in the site's time zone
    h.run(h.sync.delta({"from_version": 1, "version": 2, "upsert": {"users": [{"user_id": "u1", "name": "New"}]}}))
    assert [k.id for k in h.creds.phone_keys("u1")] == ["ph-1"]
    h.run(h.sync.snapshot({"version": 3, "users": [{"user_id": "u1", "name": "New"}]}))
    assert h.creds.phone_keys("u1") == []


@pytest.mark.parametrize("phones, error", [
    ([{"id": "p", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}], "P-256"),
    ([{"id": "p\u202e", "public_key": "x"}], "id must be printable"),
    ([{"id": "p q", "public_key": "x"}], "phone key id"),
    ([{"id": "p", "public_key": _phone_pem(), "modes": ["fly"]}], "unknown mode"),
    ("not a list", "list"),
    ([{"id": "p", "public_key": "x", "extra": 1}], "unknown field"),
])
def test_bad_phone_keys_make_the_snapshot_malformed_and_change_nothing(h, phones, error):
    with pytest.raises(CommandError, match=error):
        h.run(h.sync.snapshot({"version": 1, "users": [user(1, phone_keys=phones)]}))
    assert h.creds.get_user("u1") is None and h.sync.version is None


# ------------------------------------------------------------ faces travel with the user (issue 12)
def _template(seed: int) -> list[float]:
    import random

    rng = random.Random(seed)
    return [round(rng.uniform(-0.3, 0.3), 5) for _ in range(128)]


@pytest.fixture
def hf(tmp_path):
    from doorphoned.face.store import FaceStore

    h = Harness(tmp_path)
    h.faces = FaceStore(h.creds._store, DeviceKey.load_or_create(tmp_path / "device.key"))
    h.sync.faces = h.faces
    return h


def test_snapshot_and_delta_carry_faces_like_cards(hf) -> None:
    hf.run(hf.sync.snapshot({"version": 1, "users": [user(1, faces=[_template(1), _template(2)]), user(2)]}))
    assert hf.faces.count("u1") == 2 and hf.faces.count("u2") == 0
    assert hf.faces.templates_of("u1")[0] == pytest.approx(_template(1), abs=1e-6)
    hf.run(hf.sync.delta({"from_version": 1, "version": 2, "upsert": {"users": [{"user_id": "u1", "name": "U"}]}}))
    assert hf.faces.count("u1") == 2  # a delta without faces leaves them
    hf.run(hf.sync.delta({"from_version": 2, "version": 3, "upsert": {"users": [user(1, faces=[])]}}))
    assert hf.faces.count("u1") == 0
    hf.run(hf.sync.snapshot({"version": 4, "users": [user(1, faces=[_template(3)]), user(2, faces=[_template(4)])]}))
    hf.run(hf.sync.delta({"from_version": 4, "version": 5, "remove": {"users": ["u2"]}}))
    assert hf.faces.users() == [("u1", 1)]  # the removed user's templates went with them
    hf.run(hf.sync.snapshot({"version": 6, "users": [user(1)]}))
    assert hf.faces.count() == 0  # a snapshot is the whole truth: no faces, no templates


@pytest.mark.parametrize("faces", [[[0.1] * 127], [[float("nan")] * 128], ["x"], [[True] * 128], "t",
                                   [[0.1] * 128] * 11])
def test_bad_faces_refuse_the_item_and_store_nothing(hf, faces) -> None:
    result = hf.run(hf.sync.snapshot({"version": 1, "users": [user(1, faces=[_template(1)])]}))
    assert hf.faces.count("u1") == 1
    with pytest.raises(CommandError, match="faces"):
        hf.run(hf.sync.delta({"from_version": 1, "version": 2, "upsert": {"users": [user(1, faces=faces)]}}))
    assert hf.faces.count("u1") == 1 and result
