"""The relay's commands: list, open and test the doors, read the door log; the cloud's ``open_door``.

An open goes through the access gate (``core/ports.Gate``) like any credential, so it is decided,
recorded and published as every other opening; the wiring test drives the locks directly and writes its
own door-log entry. The socket's ``relay.open`` and the cloud's ``open_door`` are two declarations: they
present different credentials (the installer's uid, the cloud's source) and answer in their own words.
"""

from __future__ import annotations

from typing import Any

from doorphoned.core.clock import Clock
from doorphoned.core.commands import Caller, Command, CommandError, arg_int, arg_opt_text, installer
from doorphoned.core.ports import Gate, LockError
from doorphoned.core.presentations import REMOTE_SOURCES, InstallerOpen, RemoteOpen
from doorphoned.core.store import DoorLogEntry, Store
from doorphoned.relay.feature import DoorsFeature

TEST_PULSE_SECONDS = 1.0
DOOR_LOG_KINDS = ("access", "door_status", "alarm", "lock_fault", "relay_test", "motion", "package")


class RelayCommands:
    """Handlers over the doors feature, the gate and the door log; each returns JSON-ready data or raises
    :class:`CommandError`."""

    def __init__(self, doors: DoorsFeature, gate: Gate, store: Store, clock: Clock) -> None:
        self._doors = doors
        self._gate = gate
        self._store = store
        self._clock = clock

    def commands(self) -> list[Command]:
        return [
            Command("relay.list", None, self.relay_list, frozenset(), "each door and its lock"),
            Command("relay.open", None, self.relay_open, frozenset({"door"}), "open a door as the installer"),
            Command("relay.test", None, self.relay_test, frozenset({"pulse_ms"}), "pulse each lock, read inputs"),
            Command("log.doors", None, self.log_doors, frozenset({"limit", "door", "kind"}), "the door log"),
            Command(None, "open_door", self.open_door, frozenset({"door", "source", "user"}),
                    "open a door for the app, a voice assistant or Home Assistant"),
        ]

    def _running(self) -> DoorsFeature:
        if not self._doors.doors:
            raise CommandError("doors are not running (see `doorphonectl status` for the reason)")
        return self._doors

    async def relay_list(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        return [d.describe() for d in self._running().doors.values()]

    async def relay_open(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16)
        result = await self._gate.request(InstallerOpen(installer(caller).uid), door)
        if result.error_reason == "storage":
            raise CommandError(f"door {door}: not opened: {result.error}")
        if not result.granted:
            raise CommandError(f"door {door}: refused ({result.reason})")
        if not result.opened:
            raise CommandError(f"door {door}: not opened: {result.error}")
        return {"door": door, "opened": True}

    async def open_door(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16, None)
        source = args.get("source", "portal")
        if source not in REMOTE_SOURCES:
            raise CommandError(f"source must be one of {', '.join(REMOTE_SOURCES)}")
        user = arg_opt_text(args, "user")
        result = await self._gate.request(RemoteOpen(source, user), door)
        if not result.granted:
            raise CommandError(f"refused: {result.reason}")
        if not result.opened:
            raise CommandError(f"not opened: {result.error}")
        return {"door": door, "opened": True}

    async def relay_test(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Pulse each lock in turn and read each input: the installer's wiring check."""
        seconds = float(arg_int(args, "pulse_ms", 100, 10_000, int(TEST_PULSE_SECONDS * 1000))) / 1000
        uid = installer(caller).uid
        doors = self._running()
        results = []
        for door in doors.doors.values():
            entry: dict[str, Any] = {"door": door.id, "name": door.config.name, "lock": door.config.lock,
                                     **door.input_states()}
            try:
                await door.pulse(seconds)
                await self._clock.sleep(seconds + 0.2)
                entry["pulse"] = "ok"
            except LockError as exc:
                entry["pulse"] = f"failed: {exc.detail}"
            entry["locked_again"] = not door.driver.unlocked
            results.append(entry)
            self._store.append_door_log(DoorLogEntry(
                ts=self._clock.now(), kind="relay_test", door=door.id, subject=f"uid {uid}",
                reason="ok" if entry["pulse"] == "ok" else "failed", detail=entry))
        results.append({"tamper": doors.tamper_state()})
        return results

    async def log_doors(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        limit = arg_int(args, "limit", 1, 100_000, 50)
        door = args.get("door")
        if door is not None:
            door = arg_int(args, "door", 1, 16)
        kind = args.get("kind")
        if kind is not None and kind not in DOOR_LOG_KINDS:
            raise CommandError("kind must be access, door_status, alarm, lock_fault or relay_test")
        return [e.as_dict() for e in self._store.door_log(limit, door, kind)]
