"""Home Assistant MQTT discovery: each door a ``lock`` (open = pulse), each contact a ``binary_sensor``,
access decisions an ``event`` entity, availability from the unit's retained state (LWT).

Discovery configs are retained under ``<ha_prefix>/<component>/<device_id>/<object>/config``; entity
states live under the unit's own root (``<root>ha/...``), so one ACL pattern covers them. Home
Assistant's lock commands (``OPEN``/``UNLOCK`` on ``<root>ha/door/<n>/set``) open the door as source
``home_assistant``; there is no command id or timestamp in that protocol, so only a trusted Home
Assistant may be allowed to write the topic, and freshness is judged by the link: only a command that
arrives through this connection's own subscription, not retained, counts (``MqttLink.live_only``;
docs/mqtt-api.md, "When a Home Assistant lock command counts").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from doorphoned import __version__
from doorphoned.cloud.config import CloudConfig


class HaSite(Protocol):
    @property
    def name(self) -> str: ...


class HaDoor(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def sensor(self) -> object | None: ...


class HaMotion(Protocol):
    @property
    def enabled(self) -> bool: ...

    @property
    def cooldown_s(self) -> float: ...


class HaSections(Protocol):
    """What discovery reads of the root configuration: this unit's link, its name and its doors."""

    @property
    def cloud(self) -> CloudConfig: ...

    @property
    def site(self) -> HaSite: ...

    @property
    def doors(self) -> Sequence[HaDoor]: ...

    @property
    def motion(self) -> HaMotion: ...


def discovery_messages(config: HaSections, root: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of every discovery config for this unit."""
    cloud = config.cloud
    node = cloud.device_id
    device = {"identifiers": [f"doorphone_{node}"], "name": config.site.name, "manufacturer": "doorphoned",
              "model": "door phone", "sw_version": __version__}
    availability = [{"topic": root + "state", "value_template": "{{ 'online' if value_json.online else 'offline' }}"}]
    common = {"device": device, "availability": availability}
    messages: list[tuple[str, dict[str, Any]]] = []
    for door in config.doors:
        name = door.name or f"Door {door.id}"
        messages.append((f"{cloud.ha_prefix}/lock/{node}/door{door.id}/config", {
            **common, "name": name, "unique_id": f"{node}_door{door.id}_lock",
            "command_topic": f"{root}ha/door/{door.id}/set", "state_topic": f"{root}ha/door/{door.id}/lock",
            "payload_open": "OPEN", "payload_unlock": "UNLOCK", "payload_lock": "LOCK",
            "state_locked": "LOCKED", "state_unlocked": "UNLOCKED", "optimistic": False}))
        if door.sensor is not None:
            messages.append((f"{cloud.ha_prefix}/binary_sensor/{node}/door{door.id}/config", {
                **common, "name": f"{name} contact", "unique_id": f"{node}_door{door.id}_contact",
                "device_class": "door", "state_topic": f"{root}ha/door/{door.id}/contact",
                "payload_on": "ON", "payload_off": "OFF"}))
    if config.motion.enabled:
        messages.append((f"{cloud.ha_prefix}/binary_sensor/{node}/motion/config", {
            **common, "name": "Motion", "unique_id": f"{node}_motion", "device_class": "motion",
            "state_topic": f"{root}ha/motion", "payload_on": "ON", "payload_off": "OFF"}))
    messages.append((f"{cloud.ha_prefix}/event/{node}/access/config", {
        **common, "name": "Access", "unique_id": f"{node}_access", "state_topic": f"{root}ha/access",
        "event_types": ["granted", "denied"]}))
    messages.append((f"{cloud.ha_prefix}/event/{node}/doorbell/config", {
        **common, "name": "Doorbell", "unique_id": f"{node}_doorbell", "device_class": "doorbell",
        "state_topic": f"{root}ha/doorbell", "event_types": ["press"]}))
    return messages
