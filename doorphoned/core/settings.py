"""Configuration set at run time (cloud ``config.set``, ``doorphonectl config set``), kept in the store.

Why in the store and not written into the TOML file: the file belongs to the installer (and may be
read-only, managed by a provisioning tool); the cloud's settings must survive a restart all the same.
Overrides are applied over the file at every start and reload; environment variables still win.
Only keys an office manager may reasonably change are settable: never the cloud link itself (a bad
push would cut the unit off for good), the state directory, the control socket, or wiring (a wrong
pin from afar could hold a door open), nor a door's mode (bistable would leave it unlocked after
its next grant).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from doorphoned.core.commands import CommandError
from doorphoned.core.config import ConfigError


class SettingsOwner(Protocol):
    """Whoever keeps the run-time settings and reloads with them (the daemon)."""

    async def set_config(self, changes: dict[str, Any], replace_prefix: str = "") -> dict[str, Any]: ...

# Not `mode`: a door switched to bistable from afar stays unlocked after its next grant.
_DOOR_KEYS = "name|trigger_delay|hold_time|relock_on_close|held_open_alarm|forced_open_grace"
SETTABLE = re.compile(
    r"^(site\.(name|timezone)"
    r"|daemon\.(log_level|door_log_max|door_log_alarms_max)"
    r"|access\.[a-z_]+"
    r"|keypad\.(digit_timeout|max_length|doors)"
    r"|nfc\.(repeat_delay|doors)"
    r"|camera\.(qr_doors|qr_cooldown)"
    r"|presence\.wake_seconds"
    rf"|doors\.([1-9]|1[0-6])\.({_DOOR_KEYS}))$"
)
MAX_OVERRIDES = 200
log = logging.getLogger(__name__)
T = TypeVar("T")


class OverrideError(ValueError):
    """A key that may not be set at run time, or too many of them; the message says which."""


def check_changes(changes: Any) -> dict[str, Any]:
    """Validate the shape of ``{key: value or null}`` from an untrusted source; null removes an override."""
    if not isinstance(changes, dict) or not changes:
        raise OverrideError("settings must be a non-empty object of {\"key\": value}")
    for key, value in changes.items():
        if not isinstance(key, str) or not SETTABLE.match(key):
            raise OverrideError(f"{str(key)[:60]!r} cannot be set at run time (see docs/configuration.md)")
        if isinstance(value, dict):
            raise OverrideError(f"{key}: a value is a number, text, true/false or a list")
        if isinstance(value, list) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise OverrideError(f"{key}: a list value is a list of door numbers")
    return dict(changes)


def merge(current: Mapping[str, Any], changes: Mapping[str, Any], replace_prefix: str = "") -> dict[str, Any]:
    """The overrides after ``changes``; with ``replace_prefix``, other keys under it are dropped (snapshots)."""
    merged = {k: v for k, v in current.items() if not (replace_prefix and k.startswith(replace_prefix))}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_OVERRIDES:
        raise OverrideError(f"at most {MAX_OVERRIDES} run-time settings")
    return merged


def admissible(stored: Mapping[str, Any],
               load: Callable[[Mapping[str, Any]], T]) -> tuple[dict[str, Any], list[str], T]:
    """The stored settings the configuration still admits, the keys dropped, and the configuration
    loaded with the ones kept.

    Why one by one: after the file changed (a door removed), one stale setting must not take the
    others down with it. The usual case (all still fit) costs one load, not one per setting: this
    runs at every start.
    """
    try:
        return dict(stored), [], load(stored)
    except ConfigError:
        pass
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    config = load(kept)
    for key in sorted(stored):
        try:
            config = load({**kept, key: stored[key]})
        except ConfigError as exc:
            log.error("run-time setting %s dropped: %s", key, exc)
            dropped.append(key)
            continue
        kept[key] = stored[key]
    return kept, dropped, config


class OverrideStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def load(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._db.execute("SELECT key, value FROM config_overrides")}

    def replace(self, overrides: Mapping[str, Any], now: datetime) -> None:
        """Keep exactly ``overrides``, durably, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM config_overrides")
            self._db.executemany("INSERT INTO config_overrides (key, value, set_at) VALUES (?, ?, ?)",
                                 [(k, json.dumps(v), now.isoformat()) for k, v in overrides.items()])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


async def set_settings(daemon: SettingsOwner, changes: Any, replace_prefix: str = "") -> dict[str, Any]:
    """Run-time settings for the cloud and the control socket alike; every refusal becomes a CommandError.

    With ``replace_prefix`` (a snapshot's door settings) ``changes`` may be empty: that clears them.
    """
    try:
        if changes or not replace_prefix:
            changes = check_changes(changes)
        return await daemon.set_config(changes or {}, replace_prefix)
    except (OverrideError, ConfigError) as exc:
        raise CommandError(str(exc)) from exc
