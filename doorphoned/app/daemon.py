"""The daemon: builds the core services, runs the features, speaks to systemd, handles signals.

Lifecycle in the aiohttp manner: :meth:`setup` (store, bus, features; nothing runs yet),
:meth:`start` (features in order, READY=1), :meth:`run` (until SIGTERM/SIGINT; SIGHUP reloads),
:meth:`stop` (features in reverse, relays to their safe state, STOPPING=1) and :meth:`cleanup`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import gc
import logging
import os
import signal
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorphoned import __version__
from doorphoned.access.credstore import CredentialStore
from doorphoned.access.devicekey import DeviceKey
from doorphoned.access.gate import AccessFeature, AccessGate
from doorphoned.access.sync import sync_version
from doorphoned.access.trust import TrustProvider, TrustSettings
from doorphoned.app.commands import build_registry
from doorphoned.app.config import Config
from doorphoned.camera.config import CameraConfig
from doorphoned.camera.monitor_link import MonitorLink
from doorphoned.control.server import ControlServer
from doorphoned.core import logsetup
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock, SystemClock, Timer
from doorphoned.core.config import ENV_PREFIX, ConfigError, config_warnings
from doorphoned.core.events import ConfigReloaded, FaceTemplatesChanged
from doorphoned.core.feature import Feature, Supervisor
from doorphoned.core.lockout import LockoutPolicy
from doorphoned.core.loopprobe import LoopProbe
from doorphoned.core.phonekeys import UnitKey
from doorphoned.core.ports import DoorState, Snapshots
from doorphoned.core.sdnotify import Notifier
from doorphoned.core.settings import OverrideStore, admissible, merge
from doorphoned.core.store import DB_NAME, Store
from doorphoned.face.photos import FacePhotos, PhotoLimits
from doorphoned.face.store import FaceStore
from doorphoned.readers import READER_NAMES, build_readers
from doorphoned.relay.doorlog import DoorLogFeature
from doorphoned.relay.feature import DoorsFeature

log = logging.getLogger(__name__)

# Which features must restart when their own config section changes on reload. The doors decide for
# themselves (DoorsFeature.needs_restart: wiring only); readers are replaced one by one.
_SECTION_FEATURES = {"control": "control", "sip": "sip"}
_READER_SECTIONS = {"keypad": "keypad", "nfc": "nfc", "ble": "ble", "camera": "qr"}


def _capture_part(camera: CameraConfig) -> CameraConfig:
    """What the camera process itself uses of its section (the QR reader's keys blanked)."""
    return dataclasses.replace(camera, qr_doors=(), qr_cooldown=0.0)


@dataclass
class ConfigLoader:
    """Re-reads the configuration from where it first came from (file or embedded default).

    ``load(overrides)`` applies the run-time overrides kept in the store over it.
    """

    load: Callable[[Mapping[str, Any] | None], Config]
    source: str


class Daemon:
    def __init__(self, config: Config, loader: ConfigLoader, clock: Clock | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.loader = loader
        self.clock: Clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.bus = EventBus()
        self.store = Store(config.state_path / DB_NAME)
        self.supervisor = Supervisor(self.clock)
        self.doors: DoorsFeature | None = None
        self.gate: AccessGate | None = None
        self.creds: CredentialStore
        self.faces: FaceStore
        self.face_photos: FacePhotos
        self.started_mono = self.clock.monotonic()
        self._stop = asyncio.Event()
        # Set once every feature has started: the cloud link connects then (commands find doors running).
        self.started = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._stop_timer: Timer | None = None
        self._reloading: asyncio.Task[tuple[str, ...] | None] | None = None
        self._instance_lock: int | None = None
        self.overrides: dict[str, Any] = {}
        self._config_lock = asyncio.Lock()  # one reload / settings change at a time
        self.exit_code = 0
        self.loop_probe = LoopProbe()  # bench only: how long the loop could not run (loop.probe)

    @property
    def config_source(self) -> str:
        return self.loader.source

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.config.site.timezone)

    def setup(self) -> None:
        self._instance_lock = take_instance_lock(self.config.state_path)
        self.store.open()
        self.store.start_checkpointer()
        key = DeviceKey.load_or_create(self.config.state_path / "device.key")
        self.creds = CredentialStore(self.store, key)
        self.faces = FaceStore(self.store, key)
        self.face_photos = FacePhotos(self.config.state_path, self.store, key, self.clock,
                                      lambda: PhotoLimits.of(self.config.face))
        self.creds.after_commit.append(self.face_photos.drain)  # a user removed by any path: their photos go
        self.unit_key = UnitKey.load_or_create(self.config.state_path / "unit-key.pem")
        self._apply_stored_overrides()
        self._open_face_photos()  # after the run-time settings: they may set the [face] photo keys
        self._build_features()

    def _open_face_photos(self) -> None:
        """The kept photos' start sweep; a failure costs the sweep (retried at the next start), not the doors."""
        try:
            self.face_photos.open()
        except OSError as exc:
            log.error("face photos: the start sweep failed (%s); it runs again at the next start", exc)

    def _apply_stored_overrides(self) -> None:
        """Run-time settings from the store go over the file; ones the file no longer admits are dropped
        one by one (a door removed from the file takes its settings along), the rest apply."""
        stored = OverrideStore(self.store.db).load()
        if not stored:
            return
        kept, dropped, config = admissible(stored, self.loader.load)
        if dropped:
            OverrideStore(self.store.db).replace(kept, self.clock.now())
        if config.daemon.state_dir == self.config.daemon.state_dir:
            self.config, self.overrides = config, kept
            logsetup.set_level(config.daemon.log_level)

    async def set_config(self, changes: dict[str, Any], replace_prefix: str = "") -> dict[str, Any]:
        """Validate run-time settings against the whole configuration, keep them, reload.

        Raises OverrideError or ConfigError (naming the key) and changes nothing when refused.
        """
        async with self._config_lock:
            merged = merge(self.overrides, changes, replace_prefix)
            if merged == self.overrides:
                return {"settings": dict(sorted(merged.items())), "changed": [], "shadowed_by_environment": []}
            self.loader.load(merged)  # refuses before anything is kept
            OverrideStore(self.store.db).replace(merged, self.clock.now())
            self.overrides = merged
            changed = await self._reload()
        shadowed = [k for k in merged if ENV_PREFIX + k.upper().replace(".", "_") in os.environ]
        if shadowed:
            log.warning("run-time settings %s are overridden by environment variables", ", ".join(shadowed))
        return {"settings": dict(sorted(merged.items())), "changed": list(changed or ()),
                "shadowed_by_environment": shadowed}

    def _build_features(self) -> None:
        self.doors = DoorsFeature(self.config, self.bus, self.clock)
        self.gate = AccessGate(self.creds, self.bus, self.clock, self.doors, lambda: self.tz,
                               lockout_policy(self.config), trust=TrustProvider(self.creds, self._trust_settings),
                               unit=self.unit_key)
        self.supervisor = Supervisor(self.clock)
        commands, credentials = build_registry(self, self.doors, self.gate)
        self.supervisor.add(DoorLogFeature(self.bus, self.store, self.config.daemon.door_log_max,
                                           self.config.daemon.door_log_alarms_max))
        if self.config.cloud.url:
            # Before the doors and readers: every event from the first one on goes into the outbox (a PIN
            # typed while the daemon was starting was recorded but never sent: found by bench/chaos.py).
            from doorphoned.cloud.feature import CloudFeature

            cloud = CloudFeature(self.config.cloud, self.store, self.bus, self.clock, self, commands, self.gate,
                                 on_start=credentials.sync.resume)
            commands.add(*cloud.commands())
            self.supervisor.add(cloud)
        self.supervisor.add(self.doors)
        self.supervisor.add(AccessFeature(self.bus, self.gate))
        for reader in build_readers(self.config, self.gate, self.clock, self.bus, self.unit_key):
            self.supervisor.add(reader)
        if self.config.camera.enabled:  # after the QR reader: it listens from the camera's first event on
            self.supervisor.add(self._camera(self.config))
            if self.config.captures.enabled:
                self.supervisor.add(self._captures(self.config))
            if self.config.motion.enabled:
                self.supervisor.add(self._motion(self.config))
            if self.config.face.enabled:
                self.supervisor.add(self._face(self.config))
        from doorphoned.camera.package_feature import PackageFeature

        self.supervisor.add(PackageFeature(self.store, self.bus, self.clock, lambda: self.supervisor.get("captures")))
        if self.config.sip.enabled:
            from doorphoned.sip.feature import SipFeature

            doors = self.doors
            self.supervisor.add(SipFeature(self.config, self.bus, self.store, self.gate, self.clock,
                                           lambda: doors.pin_factory, lambda: self.tz, lockouts=self.creds,
                                           monitor=self.monitor_link, snapshots=self.snapshots))
        self.supervisor.add(ControlServer(self.config.control_socket_path, self.config.control.group, commands))

    def _trust_settings(self) -> TrustSettings:
        access = self.config.access
        return TrustSettings(access.cloud_public_keys, access.site_id, self.config.cloud.device_id)

    def face_changed(self) -> None:
        """Templates changed: the recognition worker reloads them now (it also polls their version); the kept
        photos of templates that went are deleted (their rows are committed by now)."""
        self.face_photos.drain()
        self.bus.publish(FaceTemplatesChanged(self.clock.now()))

    # ------------------------------------------------------------ what the cloud reports (cloud/feature.Unit)
    def door_ids(self) -> frozenset[int]:
        return frozenset(d.id for d in self.config.doors)

    def door_states(self) -> list[DoorState]:
        doors = self.doors.doors.values() if self.doors is not None else []
        return [DoorState(d.id, d.driver.unlocked, d.is_open) for d in doors]

    def reader_states(self) -> dict[str, str]:
        return {f["name"]: f["reader"] for f in self.supervisor.report() if "reader" in f}

    def sync_version(self) -> int | None:
        return sync_version(self.store.db)

    def unit_identity(self) -> dict[str, str]:
        return {"id": self.unit_key.unit_id, "public_key": self.unit_key.public_pem}

    def monitor_state(self) -> dict[str, Any] | None:
        link = self.monitor_link()
        return link.cloud_state() if link is not None else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self.supervisor.start_all()
        self.started.set()
        # Everything built so far lives as long as the daemon: out of the collector's reach, a full
        # collection walks only newer objects (it walked them all every few seconds during a sync, 20-45 ms
        # with the GIL held: the loop, and every door, waited).
        gc.freeze()
        if self.notifier.watchdog_interval:
            self._watchdog = loop.create_task(self._pet_watchdog(self.notifier.watchdog_interval))
        self.notifier.ready(self._status_line())
        log.log(logsetup.NOTICE, "doorphoned %s ready (%s, %d doors)", __version__, self.loader.source,
                len(self.config.doors))
        for warning in config_warnings(self.config):
            log.warning("configuration: %s", warning)

    def _status_line(self) -> str:
        states = {f["name"]: f["state"] for f in self.supervisor.report()}
        failed = [n for n, s in states.items() if s != "running"]
        return f"{len(self.config.doors)} doors; " + ("all features running" if not failed
                                                      else "degraded: " + ", ".join(failed))

    async def _pet_watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the loop itself: if the loop hangs, systemd notices and restarts us."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)  # systemd's time, not the injected clock: a test clock must not starve it

    async def run(self) -> None:
        await self._stop.wait()

    def request_stop(self, exit_code: int = 0, delay: float = 0.0) -> None:
        """Stop the daemon (after ``delay`` seconds, so a reply can go out first) and exit with ``exit_code``."""
        self.exit_code = exit_code
        if delay:
            self._stop_timer = self.clock.call_later(delay, self._stop.set)
        else:
            self._stop.set()

    def _on_sighup(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> tuple[str, ...] | None:
        """Re-read the configuration; keep the running one if the new one is invalid (returns None).

        Returns the names of the sections that changed.
        """
        async with self._config_lock:
            return await self._reload()

    async def _reload(self) -> tuple[str, ...] | None:
        self.notifier.reloading()
        try:
            new = self.loader.load(self.overrides)
        except (ConfigError, RecursionError) as exc:  # load_config turns every other failure into ConfigError
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status_line())
            return None
        changed = tuple(f.name for f in dataclasses.fields(Config)
                        if getattr(new, f.name) != getattr(self.config, f.name))
        if new.daemon.state_dir != self.config.daemon.state_dir:
            log.warning("daemon.state_dir changed: takes effect at the next restart")
            kept = dataclasses.replace(new.daemon, state_dir=self.config.daemon.state_dir)
            new = dataclasses.replace(new, daemon=kept)
        rewire = self.doors is not None and self.doors.needs_restart(new)
        self.config = new
        logsetup.set_level(new.daemon.log_level)
        if self.gate is not None:
            self.gate.lockout_policy = lockout_policy(new)
        await self._apply(new, set(changed), rewire)
        self.bus.publish(ConfigReloaded(self.clock.now(), changed))
        log.log(logsetup.NOTICE, "configuration reloaded; changed: %s", ", ".join(changed) or "nothing")
        self.notifier.ready(self._status_line())
        return changed

    async def _apply(self, new: Config, changed: set[str], rewire: bool) -> None:
        """Restart only what must restart; everything else takes the new settings in place.

        Per-door timing (hold time, trigger delay, alarms, DTMF codes) is applied without a restart,
        so a ringing call or a card reader is not interrupted by `config set doors.2.hold_time=7`.
        """
        sip = self.supervisor.get("sip")
        if sip is not None:  # DTMF codes live in [[doors]]; sip.enabled itself takes effect at the next start
            sip.reconfigure(new)  # type: ignore[attr-defined]
        if self.doors is not None and not rewire:
            self.doors.reconfigure(new)
        restart = {_SECTION_FEATURES[s] for s in changed if s in _SECTION_FEATURES} | ({"doors"} if rewire else set())
        for name in sorted(restart):  # "doors" before "sip"
            await self._restart_feature(name, new)
        if rewire and sip is not None and "sip" not in restart:
            await sip.rewire_buttons()  # type: ignore[attr-defined]  # call buttons: onto the new pin factory
        await self._replace_readers(new, {_READER_SECTIONS[s] for s in changed if s in _READER_SECTIONS})
        if "camera" in changed or "monitor" in changed:
            await self._replace_camera(new, monitor_changed="monitor" in changed)
        if "captures" in changed or "camera" in changed:
            await self._replace_captures(new)
        if changed and {"motion", "camera", "captures", "site"} & set(changed):
            await self.supervisor.remove("motion")
            if new.motion.enabled and new.camera.enabled:
                await self.supervisor.insert_before("control", self._motion(new))
        if changed and {"face", "camera", "doors"} & set(changed):
            await self.supervisor.remove("face")
            if new.face.enabled and new.camera.enabled:
                await self.supervisor.insert_before("control", self._face(new))

    async def _restart_feature(self, name: str, config: Config) -> None:
        feature = self.supervisor.get(name)
        if isinstance(feature, DoorsFeature):
            feature.config = config
        elif isinstance(feature, ControlServer):
            await feature.stop()
            feature.path, feature.group = config.control_socket_path, config.control.group
        await self.supervisor.restart(name)

    async def _replace_readers(self, config: Config, names: set[str]) -> None:
        """Stop the readers whose section changed and start them again if still enabled."""
        assert self.gate is not None
        restarts = {name: await self.supervisor.remove(name) for name in READER_NAMES if name in names}
        for reader in build_readers(config, self.gate, self.clock, self.bus, self.unit_key):
            if reader.name in restarts:
                await self.supervisor.insert_before("control", reader, restarts[reader.name] + 1)

    def _camera(self, config: Config) -> Feature:
        from doorphoned.camera.feature import CameraFeature

        camera = CameraFeature(config.camera, self.bus, self.clock)
        if config.monitor.enabled:
            from doorphoned.camera.monitor_config import monitor_settings, unit_address
            from doorphoned.camera.monitor_link import MonitorLink

            MonitorLink(camera, monitor_settings(config.monitor, config.monitor.public_host or unit_address()),
                        call_cap=config.monitor.call_cap)
        return camera

    def monitor_link(self) -> MonitorLink | None:
        """The running monitor stream (None when [monitor] is off or the camera is not running); it is the
        ``core.ports.MonitorGrants`` calls and the cloud hand out URLs through."""
        camera = self.supervisor.get("camera")
        link = getattr(camera, "monitor", None)
        return link if isinstance(link, MonitorLink) else None


    def snapshots(self) -> Snapshots | None:
        """The running captures feature as ``core.ports.Snapshots`` (None when captures are off)."""
        from doorphoned.camera.capture_feature import CaptureFeature

        captures = self.supervisor.get("captures")
        return captures if isinstance(captures, CaptureFeature) else None

    def _captures(self, config: Config) -> Feature:
        from doorphoned.camera.capture_feature import CaptureFeature

        return CaptureFeature(config.captures.settings(), config.state_path, self.store, self.bus, self.clock,
                              lambda: self.supervisor.get("camera"))

    def _face(self, config: Config) -> Feature:
        from doorphoned.face.feature import FaceFeature

        assert self.gate is not None  # built before any feature
        return FaceFeature(config.face, self.gate, self.bus, self.clock, self.store.path,
                           config.state_path / "device.key", config.state_path / "face-frames.sock",
                           lambda: self.supervisor.get("camera"))

    def _motion(self, config: Config) -> Feature:
        from doorphoned.camera.motion_feature import MotionFeature

        return MotionFeature(config.motion, config.site.timezone, self.store, self.bus, self.clock,
                             lambda: self.supervisor.get("camera"), lambda: self.supervisor.get("captures"))

    async def _replace_captures(self, config: Config) -> None:
        """A changed [captures] (or [camera]) section: the captures feature again with its new settings."""
        await self.supervisor.remove("captures")
        if config.captures.enabled and config.camera.enabled:
            await self.supervisor.insert_before("control", self._captures(config))

    async def _replace_camera(self, config: Config, monitor_changed: bool = False) -> None:
        """A changed [camera] section: a new camera process with the new settings (or none when disabled).
        A change of the QR reader's keys only (``qr_doors``, ``qr_cooldown``) leaves the capture running."""
        from doorphoned.camera.feature import CameraFeature

        running = self.supervisor.get("camera")
        if (config.camera.enabled and isinstance(running, CameraFeature) and not monitor_changed
                and _capture_part(running.config) == _capture_part(config.camera)):
            running.config = config.camera
            running.announce()  # the new QR reader hears whether the camera is up
            return
        restarts = await self.supervisor.remove("camera")
        if config.camera.enabled:
            await self.supervisor.insert_before("control", self._camera(config), restarts + 1)

    async def stop(self) -> int:
        """Stop every feature (each one, even after another failed); 1 when any failed to stop."""
        self.notifier.stopping()  # a send error is logged there, never raised
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        own = [t for t in (self._watchdog, self._reloading) if t is not None and t is not asyncio.current_task()]
        for task in own:
            task.cancel()
        await asyncio.gather(*own, return_exceptions=True)
        await self.loop_probe.close()
        errors = await self.supervisor.stop_all()
        for error in errors:
            log.error("stop: %s", error)
        return 1 if errors else self.exit_code

    def cleanup(self) -> list[str]:
        """Release everything :meth:`setup` and :meth:`start` took, each part even if an earlier one
        failed; every failure is logged with the part's name and returned (the exit status says so)."""
        errors = []
        for part, release in (("store", self.store.close), ("systemd notifier", self.notifier.close),
                              ("instance lock", self._release_instance_lock),
                              ("signal handlers", self._remove_signal_handlers)):
            try:
                release()
            except Exception as exc:
                log.exception("cleanup: %s failed", part)
                errors.append(f"{part}: {type(exc).__name__}: {exc}")
        return errors

    def _release_instance_lock(self) -> None:
        if self._instance_lock is not None:
            fd, self._instance_lock = self._instance_lock, None
            os.close(fd)

    @staticmethod
    def _remove_signal_handlers() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def lockout_policy(config: Config) -> LockoutPolicy:
    access = config.access
    return LockoutPolicy(access.lockout_failures, access.lockout_window, access.lockout_first, access.lockout_max)


class AlreadyRunningError(RuntimeError):
    pass


def take_instance_lock(state_dir: Path) -> int:
    """One daemon per state directory: two would fight over the relays and the database.

    An flock on a file in the state dir; the kernel drops it when the process dies, so a kill -9
    never leaves a stale lock behind.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "doorphoned.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunningError(f"another doorphoned (pid {holder}) is running with state dir {state_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


async def run_daemon(daemon: Daemon) -> int:
    """Set up, start, run until asked to stop; then stop and clean up whatever happened before.

    A failing start still stops the features that did start and releases the store and the lock;
    an exception from setup or start is raised after that, every stop and cleanup error is logged, and
    any of them makes the exit status 1.
    """
    code = 1
    try:
        daemon.setup()
        await daemon.start()
        await daemon.run()
    finally:
        try:
            code = await daemon.stop()
        finally:
            if daemon.cleanup():
                code = 1
            await _cancel_leftover_tasks()
    return code


async def _cancel_leftover_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            log.error("task failed during shutdown: %r", result)
