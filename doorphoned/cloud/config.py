"""The cloud section: the MQTT v5 link, its TLS identity, the outbox and Home Assistant (``[cloud]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from doorphoned.core.config import ConfigError, Source, setting


def _check_broker_url(value: str) -> str | None:
    if value and not re.match(r"^mqtts?://[^\s/:]+(:\d{1,5})?/?$", value):
        return f"must look like mqtt://host:1883 or mqtts://host:8883, got {value!r}"
    return None


def _check_device_id(value: str) -> str | None:
    if value and not re.match(r"^[A-Za-z0-9_-]{1,64}$", value):
        return "must be 1-64 characters of A-Z a-z 0-9 _ - (it is part of every MQTT topic)"
    return None


@dataclass(frozen=True)
class CloudConfig:
    url: str = setting("", doc="MQTT broker, `mqtt://host:1883` or `mqtts://host:8883`; empty = no cloud link.",
                       check=_check_broker_url)
    device_id: str = setting("", doc="This unit's id: topics live under `<topic_prefix>/<device_id>/`.",
                             check=_check_device_id)
    topic_prefix: str = setting("doorphone/v1", doc="Topic root before the device id (contract: doorphone/v1).")
    username: str = setting("", doc="MQTT username (password authentication).")
    password: str = setting("", doc="MQTT password; never logged or shown.", secret=True)
    ca_file: str = setting("", doc="CA certificate (PEM) that signed the broker's certificate (mqtts).")
    cert_file: str = setting("", doc="This unit's client certificate (PEM) for TLS client authentication.")
    key_file: str = setting("", doc="The client certificate's private key (PEM).")
    keepalive: int = setting(30, doc="MQTT keep-alive in seconds; the LWT fires about 1.5x this after a loss.",
                             min=5, max=3600)
    session_expiry: int = setting(86400, doc="Seconds the broker keeps this unit's session while it is away.",
                                  min=0, max=2**31)
    command_max_age: float = setting(300.0, doc="Commands whose `ts` is older than this many seconds are refused.",
                                     min=1, max=86400)
    max_payload: int = setting(65536, doc="Largest command payload accepted, in bytes.", min=1024, max=1048576)
    outbox_max: int = setting(100_000, doc="Events kept while offline; beyond it the oldest are dropped "
                              "(and counted), ordinary events before any alarm or lock fault.",
                              min=1000, max=10_000_000)
    inflight: int = setting(200, doc="Events sent and not yet acknowledged at once.", min=1, max=65535)
    ha_discovery: bool = setting(False, doc="Publish Home Assistant MQTT discovery: doors as locks, contacts as "
                                 "binary sensors, access as events. HA can then open doors: restrict it by ACL.")
    ha_prefix: str = setting("homeassistant", doc="Home Assistant's discovery prefix.")
    reconnect_max: float = setting(60.0, doc="Longest wait between reconnection attempts (seconds); the wait "
                                   "doubles from 1 s with random jitter.", min=1, max=3600)

    def validate(self, source: Source) -> None:
        if self.url and not self.device_id:
            raise ConfigError("cloud.device_id", "the cloud link needs a device id", source.where("cloud.url"))
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("cloud.key_file", "cert_file and key_file go together", source.where("cloud.cert_file"))
