"""Captures over the cloud link (real mosquitto, daemon, camera process, hw-sim camera): ``capture`` answers
with the capture's id, ``evt/capture`` names it (with the door-log entry of the access that triggered it),
``capture.get`` sends the file in acknowledged chunks that reassemble to the same bytes, and hostile
``capture`` / ``capture.get`` arguments are refused with nothing written."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from tests.e2e.test_captures import ENV, _camera_up, _files
from tests.mqtt import Client, cloud_send
from tests.procs import wait_for

ROOT = "doorphone/v1/unit-b/"


@pytest.fixture
def cloud_unit(daemon_factory, broker):
    d = daemon_factory(env={**broker.env("unit-b"), **ENV})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    _camera_up(d)
    return d


@pytest.fixture(scope="module")
def shared_cloud_unit(shared_daemon_factory, shared_broker):
    """One unit for the hostile arguments: each case asserts that nothing was written, so they can share it."""
    d = shared_daemon_factory(env={**shared_broker.env("unit-b"), **ENV})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    _camera_up(d)
    return d


def test_capture_then_capture_get_reassembles_to_the_same_jpeg(cloud_unit, broker):
    watcher = Client(broker, "cloud")
    watcher.subscribe(ROOT + "#")
    code, reply, err = cloud_send(broker, "unit-b", "capture", {"door": 1})
    assert code == 0, err
    taken = reply["result"]
    path = cloud_unit.state_dir / "captures" / cloud_unit.ctl_json("log", "captures")[0]["file"]
    code, reply, err = cloud_send(broker, "unit-b", "capture.get", {"capture_id": taken["id"], "chunk_size": 1024})
    assert code == 0, err
    result = reply["result"]
    assert result["chunks"] > 1 and result["capture_id"] == taken["id"] and result["bytes"] == taken["size"]
    chunks = wait_for(lambda: (c := [json.loads(p) for t, p, _ in watcher.messages
                                     if t.startswith(result["topic"]) and not t.endswith("progress")])
                      and len(c) == result["chunks"] and c, timeout=10, what="every chunk")
    data = b"".join(base64.b64decode(c["data"]) for c in sorted(chunks, key=lambda c: c["index"]))
    assert data == path.read_bytes() and hashlib.sha256(data).hexdigest() == result["sha256"]
    events = wait_for(lambda: [json.loads(p) for t, p, _ in watcher.messages if t == ROOT + "evt/capture"],
                      timeout=10, what="evt/capture")
    assert (events[0]["capture_id"], events[0]["trigger"], events[0]["door"]) == (taken["id"], "manual", 1)
    watcher.close()


def test_an_access_event_and_its_capture_event_share_the_log_entry(cloud_unit, broker):
    watcher = Client(broker, "cloud")
    watcher.subscribe(ROOT + "evt/#")
    code, _, err = cloud_send(broker, "unit-b", "open_door", {"door": 1})
    assert code == 0, err
    access = wait_for(lambda: [json.loads(p) for t, p, _ in watcher.messages if t == ROOT + "evt/access"],
                      timeout=10, what="evt/access")[0]
    capture = wait_for(lambda: [json.loads(p) for t, p, _ in watcher.messages if t == ROOT + "evt/capture"],
                       timeout=20, what="evt/capture")[0]
    assert (capture["trigger"], capture["log_id"], capture["door"]) == ("granted", access["log_id"], 1)
    watcher.close()


@pytest.mark.parametrize("name, args", [
    ("capture.get", {"capture_id": 0}), ("capture.get", {"capture_id": -1}), ("capture.get", {"capture_id": "1"}),
    ("capture.get", {"capture_id": 2**64}), ("capture.get", {"capture_id": 1.5}), ("capture.get", {"capture_id": 999}),
    ("capture.get", {"capture_id": [1]}), ("capture.get", {"capture_id": 1, "chunk_size": 10**9}),
    ("capture.get", {}), ("capture", {"door": 0}), ("capture", {"door": "1\u202e"}), ("capture", {"door": True}),
    ("capture", {"door": 1, "path": "/etc/passwd"}), ("capture", {"trigger": "motion"})])
def test_hostile_arguments_are_refused_with_nothing_written(shared_cloud_unit, shared_broker, name, args):
    cloud_unit, broker = shared_cloud_unit, shared_broker
    before = _files(cloud_unit)
    code, reply, _ = cloud_send(broker, "unit-b", name, args)
    assert code != 0 and reply is not None and reply["ok"] is False and reply["error"]
    assert _files(cloud_unit) == before and cloud_unit.ctl_json("log", "captures") == []
    assert cloud_unit.proc.poll() is None and not os.listdir(cloud_unit.state_dir / "captures")
