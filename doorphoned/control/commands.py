"""What ``doorphonectl`` can ask the daemon: one table of command name -> handler."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from doorphoned import __version__
from doorphoned.control.server import group_id
from doorphoned.core import logsetup
from doorphoned.core.commands import CommandError, Handler, Peer, arg_int
from doorphoned.core.config import config_warnings, to_dict
from doorphoned.core.ports import LockError
from doorphoned.core.presentations import InstallerOpen
from doorphoned.core.settings import set_settings
from doorphoned.core.statedir import mode_problems
from doorphoned.core.store import DB_NAME, DoorLogEntry

if TYPE_CHECKING:
    from doorphoned.app.daemon import Daemon

TEST_PULSE_SECONDS = 1.0

# The arguments each command takes: any other is refused before the handler runs (a typo such as
# {"dor": 2} must not fall back to a default and act).
FIELDS: dict[str, frozenset[str]] = {name: frozenset(args) for name, args in {
    "status": (), "relay.list": (), "relay.open": ("door",), "relay.test": ("pulse_ms",),
    "log.doors": ("limit", "door", "kind"), "log.level": ("level",), "config.show": (),
    "config.set": ("settings",), "doctor": (), "cloud.status": (), "loop.probe": ("run",),
}.items()}



class Commands:
    """Handlers over the running daemon; each returns JSON-ready data or raises CommandError."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def table(self) -> dict[str, Handler]:
        return {
            "status": self.status,
            "relay.list": self.relay_list,
            "relay.open": self.relay_open,
            "relay.test": self.relay_test,
            "log.doors": self.log_doors,
            "log.level": self.log_level,
            "config.show": self.config_show,
            "config.set": self.config_set,
            "doctor": self.doctor,
            "cloud.status": self.cloud_status,
            "loop.probe": self.loop_probe,
        }





    async def loop_probe(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Start (``run: true``, fresh figures) or stop (``run: false``) the loop-lag probe, or read it."""
        run = args.get("run")
        if run is not None and not isinstance(run, bool):
            raise CommandError("run must be true or false")
        probe = self.d.loop_probe
        if run is False:
            probe.stop()
        elif run:
            probe.start()
        return probe.report()

    def _doors(self) -> Any:
        doors = self.d.doors
        if doors is None or not doors.doors:
            raise CommandError("doors are not running (see `doorphonectl status` for the reason)")
        return doors

    async def status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        cfg = self.d.config
        doors = self.d.doors
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(self.d.clock.monotonic() - self.d.started_mono, 1),
            "site": cfg.site.name,
            "timezone": cfg.site.timezone,
            "config_source": self.d.config_source,
            "log_level": logsetup.current_level(),
            "features": self.d.supervisor.report(),
            "doors": [d.describe() for d in doors.doors.values()] if doors else [],
            "tamper": doors.tamper_state() if doors else None,
            "store": {"path": str(self.d.store.path), "bytes": self.d.store.size_bytes(),
                      "door_log_entries": self.d.store.door_log_count()},
            "credentials": self.d.creds.counts(),
        }

    async def relay_list(self, args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return [d.describe() for d in self._doors().doors.values()]

    async def relay_open(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16)
        if self.d.gate is None:
            raise CommandError("the access gate is not running")
        result = await self.d.gate.request(InstallerOpen(peer.uid), door)
        if result.error_reason == "storage":
            raise CommandError(f"door {door}: not opened: {result.error}")
        if not result.decision.granted:
            raise CommandError(f"door {door}: refused ({result.decision.reason.value})")
        if not result.opened:
            raise CommandError(f"door {door}: not opened: {result.error}")
        return {"door": door, "opened": True}

    async def relay_test(self, args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        """Pulse each lock in turn and read each input: the installer's wiring check."""
        seconds = float(arg_int(args, "pulse_ms", 100, 10_000, int(TEST_PULSE_SECONDS * 1000))) / 1000
        doors = self._doors()
        results = []
        for door in doors.doors.values():
            entry: dict[str, Any] = {"door": door.id, "name": door.config.name, "lock": door.config.lock,
                                     **door.input_states()}
            try:
                await door.pulse(seconds)
                await self.d.clock.sleep(seconds + 0.2)
                entry["pulse"] = "ok"
            except LockError as exc:
                entry["pulse"] = f"failed: {exc.detail}"
            entry["locked_again"] = not door.driver.unlocked
            results.append(entry)
            self.d.store.append_door_log(DoorLogEntry(
                ts=self.d.clock.now(), kind="relay_test", door=door.id, subject=f"uid {peer.uid}",
                reason="ok" if entry["pulse"] == "ok" else "failed", detail=entry))
        results.append({"tamper": doors.tamper_state()})
        return results

    async def log_doors(self, args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        limit = arg_int(args, "limit", 1, 100_000, 50)
        door = args.get("door")
        if door is not None:
            door = arg_int(args, "door", 1, 16)
        kind = args.get("kind")
        if kind is not None and kind not in ("access", "door_status", "alarm", "lock_fault", "relay_test"):
            raise CommandError("kind must be access, door_status, alarm, lock_fault or relay_test")
        return [e.as_dict() for e in self.d.store.door_log(limit, door, kind)]

    async def log_level(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if args.get("level") is not None:
            level = arg_int(args, "level", 1, 7)
            logsetup.set_level(level)
        current = logsetup.current_level()
        return {"level": current, "name": logsetup.LEVEL_NAMES[current]}

    async def config_show(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"source": self.d.config_source, "config": to_dict(self.d.config),
                "settings": dict(sorted(self.d.overrides.items()))}

    async def config_set(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Run-time settings, the same rules as the cloud's ``config.set`` (``null`` removes one)."""
        return await set_settings(self.d, args.get("settings"))

    async def cloud_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        cloud = self.d.supervisor.get("cloud")
        if cloud is None:
            return {"enabled": False}
        state = next(f for f in self.d.supervisor.report() if f["name"] == "cloud")
        return {"enabled": True, "feature": state["state"], **cloud.status()}

    async def doctor(self, args: dict[str, Any], peer: Peer) -> list[dict[str, str]]:
        return await Doctor(self.d).run()


class Doctor:
    """Self-test of everything configured; each check is ok, warn or fail, with a reason."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.results: list[dict[str, str]] = []

    def _add(self, check: str, state: str, detail: str) -> None:
        self.results.append({"check": check, "state": state, "detail": detail})

    async def run(self) -> list[dict[str, str]]:
        self._features()
        self._storage()
        self._socket()
        self._clock()
        await self._doors()
        self._sip()
        return self.results

    def _sip(self) -> None:
        """SIP stack up, and registered when a registrar is configured (a missed call is silent otherwise)."""
        sip = next((f["sip"] for f in self.d.supervisor.report() if "sip" in f), None)
        if sip is None:
            return
        self._add("sip stack", "ok" if sip["running"] else "fail",
                  f"listening on {sip['listening']}" if sip["running"] else "not running")
        if sip["tls_port"]:
            self._add("sip tls", "warn", f"SIP over TLS on port {sip['tls_port']} uses "
                      f"{sip.get('openssl') or 'the OpenSSL'} bundled with the pjsua2 wheel: end of life, no "
                      "security fixes (see docs/sip.md)")
        reg = sip["registration"]
        if reg["configured"]:
            self._add("sip registration", "ok" if reg["active"] else "fail",
                      f"{reg['registrar']}: {reg['code']} {reg['text']}".strip())

    def _features(self) -> None:
        for feature in self.d.supervisor.report():
            ok = feature["state"] == "running"
            self._add(f"feature {feature['name']}", "ok" if ok else "fail", feature["state"] + (
                f": {feature['error']}" if feature["error"] else ""))
            if "reader" in feature:
                state = {"ok": "ok", "starting": "warn"}.get(feature["reader"], "fail")
                self._add(f"reader {feature['name']}", state,
                          f"{feature['reader']} since {feature['since']}" +
                          (f": {feature['reader_error']}" if feature["reader_error"] else ""))

    def _storage(self) -> None:
        state_dir = self.d.config.state_path
        writable = os.access(state_dir, os.W_OK)
        self._add("state directory", "ok" if writable else "fail",
                  f"{state_dir} {'writable' if writable else 'NOT writable'}")
        free = shutil.disk_usage(state_dir).free
        self._add("disk space", "ok" if free > 50e6 else "warn", f"{free / 1e6:.0f} MB free")
        check = self.d.store.quick_check()
        self._add("database", "ok" if check == "ok" else "fail",
                  f"{self.d.store.path.name}: schema {self.d.store.schema_version}, quick_check {check}")
        files = [state_dir, *(state_dir / f"{DB_NAME}{suffix}" for suffix in ("", "-wal", "-shm")),
                 state_dir / "log" / "doorphoned.log"]
        loose = mode_problems(files)
        self._add("database mode", "fail" if loose else "ok",
                  "; ".join(loose) + " - restart the daemon (it sets owner-only modes) or chmod" if loose else
                  f"{state_dir}: database and log readable by the owner only")
        key = state_dir / "device.key"
        private = key.exists() and key.stat().st_mode & 0o077 == 0
        self._add("device key", "ok" if private else "fail",
                  f"{key} {'present, owner-only' if private else 'MISSING or readable by others'}")

    def _socket(self) -> None:
        path = self.d.config.control_socket_path
        mode = path.stat().st_mode & 0o777
        gid = group_id(self.d.config.control.group)
        state = "ok" if mode & 0o007 == 0 else "fail"
        detail = f"{path} mode {mode:o}" + ("" if gid is not None else
                                            f"; group {self.d.config.control.group!r} missing: root only")
        self._add("control socket", state if gid is not None or state == "fail" else "warn", detail)

    def _clock(self) -> None:
        now = self.d.clock.now()
        sane = now.year >= 2025
        self._add("clock", "ok" if sane else "warn",
                  f"{now.isoformat(timespec='seconds')}{'' if sane else ' (not set? check NTP/RTC)'}")
        self._add("time zone", "ok", f"{self.d.config.site.timezone}: {now.astimezone(self.d.tz).strftime('%H:%M %Z')}")

    async def _doors(self) -> None:
        for warning in config_warnings(self.d.config):
            self._add("configuration", "warn", warning)
        doors = self.d.doors
        if doors is None:
            self._add("doors", "fail", "doors feature is not running")
            return
        for door in doors.doors.values():
            health = await door.driver.check()
            self._add(f"door {door.id} lock", "ok" if health.ok else "fail", health.detail)
            inputs = door.input_states()
            if inputs["sensor"] is not None and door.driver.fault():
                self._add(f"door {door.id} sensor", "fail", "door state unknown: the board is not reachable")
            elif inputs["sensor"] is not None:
                alarms = sorted(door.watch.active)
                self._add(f"door {door.id} sensor", "warn" if alarms else "ok",
                          f"door {inputs['sensor']}" + (f", alarms: {', '.join(alarms)}" if alarms else ""))
        tamper = doors.tamper_state()
        if tamper == "unknown":
            self._add("tamper", "fail", "housing state unknown: the board is not reachable")
        elif tamper is not None:
            self._add("tamper", "ok" if tamper == "ok" else "warn", f"housing {'closed' if tamper == 'ok' else 'OPEN'}")
