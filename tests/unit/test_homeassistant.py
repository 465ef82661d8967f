"""Home Assistant discovery reads the root configuration through HaSections (cloud, site, doors)."""

from __future__ import annotations

from doorphoned.app.config import load_default
from doorphoned.cloud.homeassistant import discovery_messages


def test_discovery_has_a_lock_per_door_and_a_contact_where_a_sensor_is_wired():
    config = load_default(env={"DOORPHONED_CLOUD_URL": "mqtt://127.0.0.1:1883", "DOORPHONED_CLOUD_DEVICE_ID": "u1",
                               "DOORPHONED_SITE_NAME": "Gate"})
    topics = dict(discovery_messages(config, "doorphone/v1/u1/"))
    locks = sorted(t for t in topics if t.startswith("homeassistant/lock/u1/"))
    assert locks == [f"homeassistant/lock/u1/door{d.id}/config" for d in sorted(config.doors, key=lambda d: d.id)]
    contacts = {t for t in topics if t.startswith("homeassistant/binary_sensor/u1/")}
    assert contacts == {f"homeassistant/binary_sensor/u1/door{d.id}/config" for d in config.doors if d.sensor}
    assert all(p["device"]["name"] == "Gate" for p in topics.values())


def test_a_motion_sensor_is_announced_only_when_motion_is_on():
    env = {"DOORPHONED_CLOUD_URL": "mqtt://127.0.0.1:1883", "DOORPHONED_CLOUD_DEVICE_ID": "u1"}
    off = dict(discovery_messages(load_default(env=env), "doorphone/v1/u1/"))
    assert "homeassistant/binary_sensor/u1/motion/config" not in off
    on = dict(discovery_messages(load_default(env={**env, "DOORPHONED_MOTION_ENABLED": "true"}), "doorphone/v1/u1/"))
    sensor = on["homeassistant/binary_sensor/u1/motion/config"]
    assert (sensor["device_class"], sensor["state_topic"]) == ("motion", "doorphone/v1/u1/ha/motion")
