"""Motion alerts through the real unit: hw-sim's camera (a disc crossing, a brightness ramp, noise), the
camera process's detector, the daemon's door log, captures and the cloud's ``evt/motion``."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.test_captures import ENV, _camera_up
from tests.mqtt import Client
from tests.procs import wait_for

ROOT = "doorphone/v1/unit-b/"
MOTION = {**ENV, "DOORPHONED_MOTION_ENABLED": "true", "DOORPHONED_MOTION_COOLDOWN_S": "600"}


def _motion_entries(d) -> list[dict]:
    return d.door_log(kind="motion")


def _armed(d) -> dict:
    return wait_for(lambda: (f := next(f for f in d.ctl_json("status")["features"] if f["name"] == "motion"))
                    ["armed"] is not None and f, timeout=60, interval=0.3, what="motion settings sent")


@pytest.fixture
def cloud_motion(daemon_factory, broker):
    d = daemon_factory(env={**broker.env("unit-b"), **MOTION})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    _camera_up(d)
    return d


def test_an_object_entering_alerts_once_per_cooldown_with_a_capture(cloud_motion, broker, hwsim):
    assert _armed(cloud_motion)["armed"] is True
    watcher = Client(broker, "cloud")
    watcher.subscribe(ROOT + "evt/#")
    hwsim.cmd("camera", "move", "--speed", "300")
    event = wait_for(lambda: [json.loads(p) for t, p, _ in watcher.messages if t == ROOT + "evt/motion"],
                     timeout=30, what="evt/motion")[0]
    entries = _motion_entries(cloud_motion)
    assert [e["id"] for e in entries] == [event["log_id"]] and event["door"] == 1
    capture = next(c for c in cloud_motion.ctl_json("log", "captures") if c["id"] == event["capture_id"])
    assert (capture["trigger"], capture["log_id"]) == ("motion", event["log_id"])
    hwsim.cmd("camera", "move", "--speed", "300")  # again, within the cooldown: no second alert
    time.sleep(4)  # the crossing takes ~2.5 s; an alert would come within it
    assert len(_motion_entries(cloud_motion)) == 1
    assert len([t for t, _, _ in watcher.messages if t == ROOT + "evt/motion"]) == 1
    watcher.close()


def test_a_brightness_ramp_and_noise_do_not_alert(daemon_factory, hwsim):
    d = daemon_factory(env=MOTION)
    d.start()
    _camera_up(d)
    assert _armed(d)["armed"] is True
    hwsim.cmd("camera", "noise", "6")
    hwsim.cmd("camera", "ramp", "80", "--seconds", "4")
    time.sleep(8)  # the ramp and noise run past their end; any alert would be logged within it
    hwsim.cmd("camera", "noise", "0")
    assert _motion_entries(d) == []
    hwsim.cmd("camera", "move", "--speed", "300")  # the detector was watching all along
    wait_for(lambda: len(_motion_entries(d)) == 1, timeout=30, what="the disc alerts")


def test_disarmed_by_schedule_nothing_alerts(daemon_factory, hwsim):
    # A window that is never now: one minute on a day that is not today (in the site's zone, UTC here).
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    other = days[(time.gmtime().tm_wday + 3) % 7]
    d = daemon_factory(env={**MOTION, "DOORPHONED_MOTION_SCHEDULE": json.dumps([f"{other} 00:00-00:01"])})
    d.start()
    _camera_up(d)
    assert _armed(d)["armed"] is False
    hwsim.cmd("camera", "move", "--speed", "300")
    time.sleep(4)
    assert _motion_entries(d) == []


def test_home_assistant_motion_sensor_goes_on_then_off_after_the_cooldown(daemon_factory, broker, hwsim):
    env = {**broker.env("unit-b"), **MOTION, "DOORPHONED_MOTION_COOLDOWN_S": "3",
           "DOORPHONED_CLOUD_HA_DISCOVERY": "true"}
    d = daemon_factory(env=env)
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    _camera_up(d)
    assert _armed(d)["armed"] is True
    watcher = Client(broker, "cloud")
    watcher.subscribe(ROOT + "ha/motion")
    wait_for(lambda: [p for t, p, _ in watcher.messages if t == ROOT + "ha/motion"] == [b"OFF"], timeout=10,
             what="the sensor's retained OFF")
    hwsim.cmd("camera", "move", "--speed", "300")
    states = wait_for(lambda: (s := [p for t, p, _ in watcher.messages if t == ROOT + "ha/motion"])[-1:] == [b"OFF"]
                      and b"ON" in s and s, timeout=40, what="ON then OFF")
    assert states[:2] == [b"OFF", b"ON"]
    watcher.close()
