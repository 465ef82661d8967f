"""The root configuration: the features' sections, one line each, and the rules that span them.

Adding a feature's configuration is adding its folder's ``config.py`` (a frozen dataclass of
``setting`` fields, its own rules as a ``validate`` method) and one field here; the engine
(``core/config.py``) derives loading, ``DOORPHONED_*`` overrides and docs/configuration.md from it.
Features never import this module: each reads its own section, or a Protocol of the sections it
needs (``relay/config.RelaySections``, ``sip/config.SipSections``, ``readers/config.ReaderSections``).

``python -m doorphoned.app.config [--update FILE]`` prints (or writes into FILE) the key reference.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from doorphoned.access.config import AccessConfig
from doorphoned.camera.capture_config import CapturesConfig
from doorphoned.camera.config import CameraConfig
from doorphoned.camera.monitor_config import MonitorConfig
from doorphoned.camera.motion_config import MotionConfig
from doorphoned.cloud.config import CloudConfig
from doorphoned.control.config import ControlConfig
from doorphoned.core.config import ConfigError, Schema, Source, check_name, check_timezone, setting, write_reference
from doorphoned.face.config import FaceConfig
from doorphoned.readers.config import BleConfig, KeypadConfig, NfcConfig
from doorphoned.relay.config import DoorConfig, GpioConfig, PresenceConfig, TamperConfig, used_pins, validate_doors
from doorphoned.sip.config import SipConfig


@dataclass(frozen=True)
class SiteConfig:
    name: str = setting("Door phone", doc="Name of this unit, shown in `status` and sent to the cloud.",
                        check=check_name)
    timezone: str = setting(
        "UTC", doc="IANA time zone of the site; schedules and temp keys are read in it.", check=check_timezone
    )


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = setting(
        "/var/lib/doorphoned", doc="Directory for the SQLite database and runtime files (relative = to cwd)."
    )
    log_level: int = setting(3, doc="Log detail 1-7 (1 critical only ... 3 warnings ... 7 trace).", min=1, max=7)
    door_log_max: int = setting(
        200_000, doc="Ordinary door-log entries kept (access, door status); the oldest are pruned beyond this.",
        min=1000, max=10_000_000
    )
    door_log_alarms_max: int = setting(
        200_000, doc="Alarms and lock faults kept in the door log, a budget of their own: ordinary entries never "
        "push them out.", min=1000, max=10_000_000
    )
    log_file_size: int = setting(
        1_048_576, doc="Bytes of each rotating log file `<state_dir>/log/doorphoned.log` (3 files are kept; "
        "the cloud fetches them with `log.upload`); 0 = log to stderr only.", min=0, max=64 * 1_048_576
    )


@dataclass(frozen=True)
class Config:
    site: SiteConfig = setting(SiteConfig(), doc="The site this unit serves.")
    daemon: DaemonConfig = setting(DaemonConfig(), doc="Process, storage and logging.")
    control: ControlConfig = setting(ControlConfig(), doc="The installer CLI socket.")
    gpio: GpioConfig = setting(GpioConfig(), doc="GPIO backend.")
    tamper: TamperConfig = setting(TamperConfig(), doc="Housing tamper switch.")
    presence: PresenceConfig = setting(PresenceConfig(), doc="Presence input (PIR, radar, touch key) that wakes "
                                       "the camera.")
    access: AccessConfig = setting(AccessConfig(),
                                   doc="Access rules: keypad lockout, trust in offline-signed temp keys.")
    keypad: KeypadConfig = setting(KeypadConfig(), doc="Serial keypad reader.")
    nfc: NfcConfig = setting(NfcConfig(), doc="NFC/RFID card reader (and NFC phone tap).")
    ble: BleConfig = setting(BleConfig(), doc="Bluetooth phone credentials (Shake, Hands-free, Tap as Card).")
    camera: CameraConfig = setting(CameraConfig(), doc="Camera (QR reader).")
    monitor: MonitorConfig = setting(MonitorConfig(), doc="Live monitor stream (RTSP) from the camera.")
    captures: CapturesConfig = setting(CapturesConfig(), doc="Camera captures (JPEG snapshots) and their retention.")
    motion: MotionConfig = setting(MotionConfig(), doc="Motion alerts from the camera.")
    face: FaceConfig = setting(FaceConfig(), doc="Face recognition on the camera's frames.")
    cloud: CloudConfig = setting(CloudConfig(), doc="The cloud link over MQTT v5.")
    sip: SipConfig = setting(SipConfig(), doc="SIP calls (pjsua2).")
    doors: tuple[DoorConfig, ...] = setting([], doc="One `[[doors]]` table per door.")

    def door(self, door_id: int) -> DoorConfig | None:
        return next((d for d in self.doors if d.id == door_id), None)

    @property
    def state_path(self) -> Path:
        return Path(self.daemon.state_dir).absolute()

    @property
    def control_socket_path(self) -> Path:
        return Path(self.control.socket).absolute() if self.control.socket else self.state_path / "control.sock"

    def validate(self, source: Source) -> None:
        """Each section's rules, in this order (the first error found is the one reported), with what
        each needs of the others: the configured door ids for the readers, the doors' GPIOs for SIP."""
        validate_doors(self.doors, self.tamper, source, self.presence)
        door_ids = frozenset(d.id for d in self.doors)
        self.keypad.validate(door_ids, source)
        self.nfc.validate(door_ids, source)
        self.ble.validate(door_ids, source)
        self.camera.validate(door_ids, source)
        self.monitor.validate(self.camera.enabled, source)
        self.motion.validate(source)
        self.face.validate(source)
        self.face.validate_doors(door_ids, source)
        self.cloud.validate(source)
        self.access.validate(source)
        if self.access.cloud_public_keys and not (self.access.site_id or self.cloud.device_id):
            raise ConfigError("access.site_id", "signed temp keys need a scope: set access.site_id or "
                              "cloud.device_id", source.where("access.cloud_public_keys"))
        self.sip.validate(used_pins(self.doors, self.tamper, self.presence), source)

    def warnings(self) -> list[str]:
        """No doors is a warning, not an error: an installer commissioning a unit starts it before the
        relays are wired to enrol cards, test the keypad and run `doctor`."""
        if not self.doors:
            return ["no [[doors]] configured: no credential, exit button or call can open anything"]
        return []


SCHEMA = Schema(Config)
load_config = SCHEMA.load
load_default = SCHEMA.load_default
reference_markdown = SCHEMA.reference_markdown


if __name__ == "__main__":
    write_reference(SCHEMA, sys.argv[1:])
