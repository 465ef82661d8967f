"""The package room with real processes: a delivery key (a temp key naming its recipients, from the CLI or
the cloud) opens the door, then a `package` door-log entry, a capture and `evt/package` follow."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from tests.e2e.test_captures import ENV, _camera_up
from tests.mqtt import Client, cloud_send
from tests.procs import wait_for

ROOT = "doorphone/v1/unit-b/"


def _end() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


def test_a_courier_opens_with_a_delivery_key_then_package_entry_capture_and_event(daemon_factory, broker, hwsim):
    d = daemon_factory(env={**broker.env("unit-b"), **ENV})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    _camera_up(d)
    watcher = Client(broker, "cloud")
    watcher.subscribe(ROOT + "evt/#")
    key = d.ctl_json("tempkey", "create", "--name", "Courier", "--doors", "1", "--end", _end(), "--count", "3",
                     "--recipient", "alice", "--recipient", "bob")
    assert key["recipients"] == ["alice", "bob"]
    assert d.ctl_json("tempkey", "show", key["id"])["recipients"] == ["alice", "bob"]
    before = hwsim.relay(1)["energise_count"]
    hwsim.cmd("keypad", key["pin"] + "#")
    wait_for(lambda: hwsim.relay(1)["energise_count"] > before, timeout=20, what="door 1 opened")
    event = wait_for(lambda: [json.loads(p) for t, p, _ in watcher.messages if t == ROOT + "evt/package"],
                     timeout=30, what="evt/package")[0]
    assert (event["door"], event["key_id"], event["recipients"]) == (1, key["id"], ["alice", "bob"])
    entry = next(e for e in d.door_log(kind="package"))
    assert entry["id"] == event["log_id"] and entry["detail"]["recipients"] == ["alice", "bob"]
    access = next(e for e in d.door_log(kind="access") if e["key_id"] == key["id"])
    assert event["access_log_id"] == access["id"]
    captures = d.ctl_json("log", "captures")
    assert [(c["id"], c["trigger"], c["log_id"]) for c in captures] == [(event["capture_id"], "package",
                                                                          event["log_id"])]
    watcher.close()


def test_cloud_tempkey_add_with_recipients_and_hostile_recipients_refused(daemon_factory, broker, hwsim):
    d = daemon_factory(env=broker.env("unit-b"))
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    body = {"key_id": "tk-courier01", "name": "Courier", "doors": [1], "start": datetime.now(UTC).isoformat(),
            "end": _end(), "pin": "48151623", "count": 2}
    for bad in (["alice", "alice"], ["a\u202eb"], "alice", [1], ["x" * 100], [f"u{i}" for i in range(9)]):
        code, reply, _ = cloud_send(broker, "unit-b", "tempkey.add", {**body, "recipients": bad})
        assert code != 0 and reply["ok"] is False and "recipients" in reply["error"], (bad, reply)
    assert d.ctl_json("tempkey", "list") == []
    code, reply, err = cloud_send(broker, "unit-b", "tempkey.add", {**body, "recipients": ["carol"]})
    assert code == 0, err
    assert d.ctl_json("tempkey", "show", "tk-courier01")["recipients"] == ["carol"]
    hwsim.cmd("keypad", "48151623#")
    entry = wait_for(lambda: d.door_log(kind="package"), timeout=20, what="package entry")[0]
    assert entry["detail"]["recipients"] == ["carol"] and entry["door"] == 1
    time.sleep(0.5)
    assert d.proc.poll() is None
