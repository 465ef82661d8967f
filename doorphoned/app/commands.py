"""The daemon-wide commands (``status``, ``doctor``, ``config``, ``log.level``, ``restart``, ...) and the
installer's self-test.

They describe and steer the daemon as a whole, so they live in the composition root, next to what they
read; every feature's own commands live in its folder and receive only what they work on.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from doorphoned import __version__
from doorphoned.access.cloudcommands import CloudCredentialCommands
from doorphoned.access.commands import CredentialCommands, decision_json
from doorphoned.camera.capture_commands import CaptureCommands
from doorphoned.camera.monitor_commands import MonitorCommands
from doorphoned.control.server import group_id
from doorphoned.core import logsetup
from doorphoned.core.commands import Caller, Command, CommandError, Registry, arg_int
from doorphoned.core.config import ConfigError, config_warnings, to_dict
from doorphoned.core.settings import OverrideError, merge, set_settings
from doorphoned.core.statedir import mode_problems
from doorphoned.core.store import DB_NAME
from doorphoned.face.commands import FaceCommands
from doorphoned.relay.commands import RelayCommands
from doorphoned.sip.commands import CallCommands

if TYPE_CHECKING:
    from doorphoned.access.gate import AccessGate
    from doorphoned.app.daemon import Daemon
    from doorphoned.relay.feature import DoorsFeature


def build_registry(daemon: Daemon, doors: DoorsFeature, gate: AccessGate) -> tuple[Registry, CloudCredentialCommands]:
    """The one command registry both the control socket and the cloud answer from: each feature's own
    declarations, given what they work on (only the daemon-wide commands see the daemon). The cloud link
    adds its ``log.upload`` when it is configured. Also returns the credential sync, which resumes an
    interrupted snapshot once the link is up."""
    known, tz = daemon.door_ids, (lambda: daemon.tz)
    credentials = CloudCredentialCommands(daemon.creds, daemon.clock, known, tz, DaemonSettings(daemon),
                                          daemon.bus.publish, gate.quiet, daemon.faces)
    registry = Registry([
        *SystemCommands(daemon).commands(),
        *RelayCommands(doors, gate, daemon.store, daemon.clock).commands(),
        *CredentialCommands(daemon.creds, gate, daemon.clock, known, tz).commands(),
        *credentials.commands(),
        *CallCommands(lambda: daemon.supervisor.get("sip"), daemon.store).commands(),
        *MonitorCommands(daemon.monitor_link, lambda: daemon.config.monitor.max_cap).commands(),
        *CaptureCommands(lambda: daemon.supervisor.get("captures"),
                         lambda: daemon.supervisor.get("cloud")).commands(),  # type: ignore[arg-type,return-value]
        *FaceCommands(daemon.faces, daemon.clock, tz, lambda: daemon.config.face, daemon.store.path,
                      daemon.config.state_path / "device.key",
                      lambda credential, door, at: decision_json(gate.check(credential, door, at), at),
                      daemon.face_changed, daemon.face_photos).commands(),
    ])
    return registry, credentials


class SystemCommands:
    """The daemon-wide commands (status, doctor, configuration, log level, restart): they read and steer
    the daemon as a whole, so they live with it, in the composition root. Each returns JSON-ready data
    or raises CommandError."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def commands(self) -> list[Command]:
        none: frozenset[str] = frozenset()
        return [
            Command("status", None, self.status, none, "version, features, doors, store, credentials"),
            Command(None, "status", self.cloud_status_report, none, "version, site, doors, features, credentials"),
            Command("doctor", None, self.doctor, none, "self-test of every configured part"),
            Command("log.level", None, self.log_level, frozenset({"level"}), "read or set the log level"),
            Command(None, "log.level", self.set_log_level, frozenset({"level"}), "set the log level"),
            Command("config.show", None, self.config_show, none, "the running configuration and settings"),
            Command("config.set", "config.set", self.config_set, frozenset({"settings"}),
                    "change run-time settings (null removes one)"),
            Command("cloud.status", None, self.cloud_status, none, "the cloud link and its outbox"),
            Command("loop.probe", None, self.loop_probe, frozenset({"run"}), "the loop-lag probe (bench)"),
            Command(None, "restart", self.restart, none, "exit 75 after the reply; systemd starts the daemon again"),
        ]

    async def loop_probe(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
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

    async def status(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
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
            "signed_keys": self._signed_keys(),
            "unit": self.d.unit_identity(),
        }

    def _signed_keys(self) -> dict[str, Any]:
        """Offline-signed temp keys: whom the unit trusts, for which scopes, and how many ids it refuses."""
        trust = self.d.gate.trust() if self.d.gate is not None else None
        return {"trusted_keys": [{"label": k.label, "fingerprint": k.fingerprint.hex()} for k in trust.keys]
                if trust else [], "scopes": sorted(trust.scopes) if trust else [],
                "revocations": self.d.creds.revocation_count()}

    async def log_level(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        if args.get("level") is not None:
            level = arg_int(args, "level", 1, 7)
            logsetup.set_level(level)
        current = logsetup.current_level()
        return {"level": current, "name": logsetup.LEVEL_NAMES[current]}

    async def config_show(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {"source": self.d.config_source, "config": to_dict(self.d.config),
                "settings": dict(sorted(self.d.overrides.items()))}

    async def config_set(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Run-time settings, the same rules as the cloud's ``config.set`` (``null`` removes one)."""
        return await set_settings(self.d, args.get("settings"))

    async def cloud_status(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        cloud = self.d.supervisor.get("cloud")
        if cloud is None:
            return {"enabled": False}
        state = next(f for f in self.d.supervisor.report() if f["name"] == "cloud")
        return {"enabled": True, "feature": state["state"], **cloud.status()}

    async def doctor(self, args: dict[str, Any], caller: Caller) -> list[dict[str, str]]:
        return await Doctor(self.d).run()

    async def cloud_status_report(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """The cloud's ``status``: shorter than the installer's (no paths, no pid)."""
        doors = self.d.doors
        return {"version": __version__, "site": self.d.config.site.name,
                "doors": [d.describe() for d in doors.doors.values()] if doors else [],
                "features": self.d.supervisor.report(), "credentials": self.d.creds.counts()}

    async def set_log_level(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """The cloud's ``log.level``: the level is required, the answer is the number."""
        logsetup.set_level(arg_int(args, "level", 1, 7, None))
        return {"level": logsetup.current_level()}

    async def restart(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Exit with status 75 after the reply is out; systemd (Restart=on-failure) starts us again."""
        self.d.request_stop(exit_code=75, delay=0.5)
        return {"restarting": True}


class DaemonSettings:
    """The sync's door settings go through the daemon's run-time settings."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def check(self, changes: dict[str, Any], replace_prefix: str) -> None:
        try:
            self.d.loader.load(merge(self.d.overrides, changes, replace_prefix))
        except (OverrideError, ConfigError) as exc:
            raise CommandError(f"doors: {exc}") from exc

    async def apply(self, changes: dict[str, Any], replace_prefix: str) -> Any:
        return await set_settings(self.d, changes, replace_prefix)


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
        self._signed_keys()

    def _signed_keys(self) -> None:
        trust = self.d.gate.trust() if self.d.gate is not None else None
        if trust is None or not trust.keys:
            self._add("signed keys", "ok", "no cloud key trusted: offline-signed temp keys are refused")
            return
        keys = ", ".join(f"{k.label} {k.fingerprint.hex()}" for k in trust.keys)
        self._add("signed keys", "ok", f"trusting {keys}; scopes {', '.join(sorted(trust.scopes))}; "
                  f"{self.d.creds.revocation_count()} revoked ids kept")

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
