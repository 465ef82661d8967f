"""Someone at the keypad cannot flood the door log or push an alarm out of it (real daemon, hw-sim, SQLite)."""

from __future__ import annotations

import json
import random
import socket

from doorphoned.readers.keypad import KeypadParser
from tests.procs import wait_for


def _refusal_counts(d) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in d.door_log(kind="access"):
        if not e["granted"]:
            counts[e["reason"]] = counts.get(e["reason"], 0) + e["detail"].get("count", 1)
    return counts


def test_keypad_burst_leaves_few_entries_with_right_counts_and_the_alarm_survives_pruning(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_DAEMON_DOOR_LOG_MAX": "1000", "DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    d.start()
    rng = random.Random(9)
    bursts = ["".join(rng.choice("0123456789#*") for _ in range(3400)) for _ in range(3)]
    parser = KeypadParser(16, 5.0)
    expected = sum(len(parser.feed(burst.encode(), 0.0)) for burst in bursts)
    for burst in bursts:
        hwsim.cmd("keypad", burst)
    wait_for(lambda: sum(_refusal_counts(d).values()) == expected, timeout=60, interval=0.5,
             what=f"all {expected} keypad entries counted")
    access = d.door_log(kind="access")
    assert len(access) <= 10, [(e["reason"], e["detail"].get("count")) for e in access]  # not ~expected entries
    counts = _refusal_counts(d)
    assert counts["locked_out"] > expected - 10 and set(counts) <= {"locked_out", "unknown", "malformed"}
    locked = next(e for e in access if e["reason"] == "locked_out")
    assert locked["detail"]["first"] <= locked["detail"]["last"]
    assert "x" in d.ctl("log", "doors").stdout  # shown with its count
    [alarm] = [a for a in d.door_log(kind="alarm") if a["detail"]["active"]]
    assert alarm["reason"] == "keypad_lockout"

    # Pruning pressure: 2,100 ordinary entries on top of a budget of 1,000 (pruned every 1,000 records).
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(str(d.socket))
    replies = conn.makefile("rb")
    for _ in range(2100):
        conn.sendall(json.dumps({"cmd": "relay.open", "args": {"door": 1}}).encode() + b"\n")
        assert json.loads(replies.readline())["ok"]
    conn.close()
    entries = d.ctl_json("status")["store"]["door_log_entries"]
    assert entries < 1000 + 1000, entries  # the oldest ordinary entries went ...
    assert alarm in d.door_log(kind="alarm")  # ... the alarm did not
