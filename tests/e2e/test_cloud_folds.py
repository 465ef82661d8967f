"""Someone at the keypad cannot flood the cloud: repeated refusals reach it as the door log folds them, and an
alarm survives an outbox overflow (real daemon, hw-sim, mosquitto with TLS)."""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import time
from typing import Any

from doorphoned.readers.keypad import KeypadParser
from tests.mqtt import Client
from tests.procs import wait_for

EVENTS = "doorphone/v1/unit-b/evt/"


def _keys(rng: random.Random, n: int = 3400) -> tuple[str, int]:
    """``n`` random keys and how many entries the keypad makes of them (``*`` first: a clean start)."""
    keys = "*" + "".join(rng.choice("0123456789#*") for _ in range(n))
    return keys, len(KeypadParser(16, 5.0).feed(keys.encode(), 0.0))


def _pin_refusals(d) -> int:
    return sum(e["detail"].get("count", 1) for e in d.door_log(kind="access") if e["credential"] == "pin"
               and not e["granted"])


def _cloud_counts(events: list[dict[str, Any]]) -> dict[int, int]:
    """Presentations per door-log entry as the cloud learns them: the last event of each ``log_id`` counts."""
    counts: dict[int, int] = {}
    for e in events:
        counts[e["log_id"]] = e.get("count", 1)
    return counts


def _add_user(d, pin: str) -> None:
    user = d.ctl_json("user", "add", "Alice")
    assert "PIN set" in d.ctl("pin", "set", user["id"], input=pin + "\n").stdout


def test_keypad_bursts_reach_the_cloud_as_a_few_events_carrying_the_total_count(daemon_factory, broker, hwsim):
    d = daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_DOORS_1_HOLD_TIME": "1",
                            "DOORPHONED_ACCESS_LOCKOUT_FIRST": "1", "DOORPHONED_ACCESS_LOCKOUT_MAX": "1"})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=15, what="cloud connected")
    _add_user(d, "582941")
    watcher = Client(broker, "cloud")
    watcher.subscribe(EVENTS + "#")
    rng = random.Random(9)
    first, n_first = _keys(rng)
    hwsim.cmd("keypad", first)
    wait_for(lambda: _pin_refusals(d) == n_first, timeout=60, interval=0.5, what=f"{n_first} keypad entries")

    # A grant in between (the exit button: another credential) is its own event, at once.
    hwsim.cmd("button", "exit", "1")
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=15, what="the exit button opened door 1")
    # Its pulse must end first: a grant while the relay still holds extends the pulse and counts no new one (the
    # second burst and the lockout can be over within the 1 s hold).
    wait_for(lambda: not hwsim.relay(1)["energised"], timeout=15, what="the exit button's pulse over")
    wait_for(lambda: [e for e in watcher.json_messages(EVENTS + "access") if e["credential"] == "exit_button"],
             timeout=15, what="the exit button's event")
    assert len(watcher.json_messages(EVENTS + "access")) <= 10, "one event per entry, not per presentation"

    second, n_second = _keys(rng)
    hwsim.cmd("keypad", second)
    wait_for(lambda: _pin_refusals(d) == n_first + n_second, timeout=60, interval=0.5, what="the second burst")
    wait_for(lambda: _lockout_over(d), timeout=30, what="the keypad lockout over")
    hwsim.cmd("keypad", "*582941#")  # a new entry from the keypad: the runs held for it end first
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 2, timeout=15, what="the valid PIN opened door 1")
    access = wait_for(lambda: [e for e in watcher.json_messages(EVENTS + "access") if e["credential"] == "pin"
                               and e["granted"]] and watcher.json_messages(EVENTS + "access"),
                      timeout=15, what="the PIN's grant event")

    refusals = [e for e in access if e["credential"] == "pin" and not e["granted"]]
    assert len(access) <= 20, f"{len(access)} events for {n_first + n_second} presentations"
    assert sum(_cloud_counts(refusals).values()) == n_first + n_second  # every presentation counted
    entries = {e["id"]: e for e in d.door_log(kind="access")}
    for log_id, count in _cloud_counts(refusals).items():  # the cloud's count is the door log's
        assert entries[log_id]["detail"].get("count", 1) == count, entries[log_id]
    summaries = [e for e in refusals if "count" in e]
    assert summaries and all(e["first"] <= e["last"] == e["ts"] for e in summaries)
    assert all(entries[e["log_id"]]["detail"]["closed"] for e in summaries)
    grant = next(e for e in access if e["credential"] == "pin" and e["granted"])
    assert all(e["seq"] < grant["seq"] for e in summaries)  # the ended runs come before the entry that ended them
    assert [e["seq"] for e in access] == sorted(e["seq"] for e in access)
    assert d.ctl_json("cloud", "status")["folds_held"] == 0
    watcher.close()


def _lockout_over(d) -> bool:
    """The keypad's lockout is over: its newest alarm says so, and the store's lockout state (written in the same
    transaction as the refusal that set it; the alarm row comes after) has no source locked any more."""
    alarms = [a for a in d.door_log(kind="alarm") if a["reason"] == "keypad_lockout"]
    if not alarms or alarms[0]["detail"]["active"]:
        return False
    db = sqlite3.connect(f"file:{d.state_dir / 'doorphoned.db'}?mode=ro", uri=True, timeout=10)
    try:
        states = [json.loads(state) for (state,) in db.execute("SELECT state FROM lockouts")]
    finally:
        db.close()
    return all(float(state.get("locked_until") or 0) < time.time() for state in states)


def test_an_alarm_survives_an_outbox_overflow_of_ordinary_events(daemon_factory, broker, hwsim):
    d = daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_CLOUD_OUTBOX_MAX": "1000"})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=15, what="cloud connected")
    watcher = Client(broker, "cloud", client_id="overflow-watcher", persistent=True)
    watcher.subscribe(EVENTS + "#")
    broker.stop()
    hwsim.cmd("keypad", "13579#" * 5)  # five wrong PINs: the keypad_lockout alarm
    wait_for(lambda: [a for a in d.door_log(kind="alarm") if a["reason"] == "keypad_lockout"], what="the alarm")
    with socket.socket(socket.AF_UNIX) as s:  # then 1,100 ordinary events: more than the outbox holds
        s.connect(str(d.socket))
        replies = s.makefile("rb")
        for _ in range(1100):
            s.sendall(b'{"cmd": "relay.open", "args": {"door": 2}}\n')
            assert json.loads(replies.readline())["ok"]
    status = d.ctl_json("cloud", "status")
    assert status["outbox_depth"] <= 1000 and status["outbox_dropped"] >= 100, status
    broker.start()
    watcher.close()
    watcher = Client(broker, "cloud", client_id="overflow-watcher", persistent=True)
    wait_for(lambda: d.ctl_json("cloud", "status")["outbox_depth"] == 0, timeout=60, what="outbox drained")
    wait_for(lambda: len(watcher.json_messages(EVENTS)) >= 1000, timeout=60, what="the kept events")
    alarms = watcher.json_messages(EVENTS + "alarm")
    assert [a["kind"] for a in alarms if a["active"]] == ["keypad_lockout"]
    grants = [e for e in watcher.json_messages(EVENTS + "access") if e["granted"]]
    assert 900 <= len(grants) < 1100  # the oldest ordinary events made room, the alarm did not
    watcher.close()
