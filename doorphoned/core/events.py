"""Every event that travels on the bus, in one place.

Events are frozen dataclasses: a subscriber cannot change what another one sees. Feature modules
publish these and subscribe to them; none of them knows who else is listening (the cloud link
will forward most of them as ``evt/<type>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

AlarmKind = Literal["held_open", "forced_open", "tamper", "keypad_lockout", "dtmf_lockout"]


@dataclass(frozen=True)
class Event:
    """Base of all bus events; ``ts`` is wall time (UTC) when it happened."""

    ts: datetime


@dataclass(frozen=True)
class ExitButtonPressed(Event):
    door: int


@dataclass(frozen=True)
class DoorStatusChanged(Event):
    """The door-status sensor changed (``is_open`` is None when no sensor is fitted)."""

    door: int
    is_open: bool


@dataclass(frozen=True)
class RelayChanged(Event):
    """A door's lock went unlocked (``unlocked``) or back to its safe, locked state."""

    door: int
    unlocked: bool


@dataclass(frozen=True)
class AlarmChanged(Event):
    """An alarm was raised (``active``) or cleared. ``door`` is None for unit-wide alarms (tamper, lockout)."""

    kind: AlarmKind
    active: bool
    door: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class AccessDecided(Event):
    """The access core decided on a credential; published after the record was persisted.

    ``stored``: a durable sink (the cloud outbox) already wrote this event in the door-log entry's own
    transaction (:meth:`AccessGate.add_recorder`), so a crash before it is published cannot lose it.
    ``folded``: a repeated refusal counted in the earlier entry ``log_id`` (the door log's ``detail.count``)
    rather than written as a new one; the cloud hears of such a run once, when it ends.
    """

    door: int
    credential: str
    subject: str
    granted: bool
    reason: str
    log_id: int = 0
    user_id: str | None = None
    key_id: str | None = None
    stored: bool = False
    folded: bool = False
    recipients: tuple[str, ...] = ()  # a delivery key's recipients (the package room reacts to them)
    distance: float | None = None  # a face's distance to the best user's template (credential ``face`` only)


@dataclass(frozen=True)
class TempKeyUsed(Event):
    """A temp key opened a door (the cloud notifies the key's creator); ``uses_left`` for repeat-never keys."""

    key_id: str
    key_name: str
    door: int
    uses_left: int | None
    stored: bool = False  # as AccessDecided.stored


@dataclass(frozen=True)
class LockFault(Event):
    """A lock driver failed to carry out a grant (bridge down, timeout, hardware fault)."""

    door: int
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class ConfigReloaded(Event):
    """SIGHUP (or a future cloud push) replaced the configuration."""

    changed_sections: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SyncResult(Event):
    """A credential sync was applied, or the unit needs a snapshot (``snapshot_requested``: a delta did
    not follow the unit's version). ``version`` is the unit's version afterwards."""

    result: Literal["applied", "snapshot_requested"]
    version: int | None
    detail: str = ""
    rejected: int = 0


@dataclass(frozen=True)
class CallEnded(Event):
    """A SIP call ended and was written to the call history (``log_id``); the cloud forwards it as ``call``.

    ``type`` is outgoing, incoming, missed or forwarded; ``reason`` says why a call was missed or how it
    ended (dnd, intercom_off, no_answer, hangup, max_call_time, rtp_timeout, ...).
    """

    log_id: int
    type: str
    direction: str
    reason: str
    peer: str
    target: str
    started: datetime
    answered: datetime | None
    duration_s: float
    opened: tuple[int, ...] = ()
    quality: Mapping[str, Any] = field(default_factory=dict)
    call_id: str = ""  # the id the ring event named (outgoing calls); "" for incoming ones
    capture_id: int | None = None  # the capture taken when it rang (None: none)
    video: Mapping[str, Any] | None = None  # its monitor viewer's fps, bitrate, loss, rtt at the end (None: none)


@dataclass(frozen=True)
class RingCallee:
    """One leg of a ringing call: who is rung, and the one-time monitor URL handed to it (None: none)."""

    uri: str
    monitor_url: str | None = field(default=None, repr=False)  # a secret: kept out of any repr in a log line


@dataclass(frozen=True)
class CallRinging(Event):
    """An outgoing call's legs were invited (a wave of the plan: the first, or the landline after it): the
    cloud forwards it live as ``evt/call`` ``ring`` so the app shows the visitor while it rings. The
    monitor URLs are secrets (one-time credentials): never logged, never stored."""

    call_id: str
    target: str
    door: int
    wave: int
    callees: tuple[RingCallee, ...]
    capture_id: int | None = None


@dataclass(frozen=True)
class CameraStateChanged(Event):
    """The camera came up (``up``: its process reads frames) or went down (``detail`` says why)."""

    up: bool
    detail: str = ""


@dataclass(frozen=True)
class MonitorChanged(Event):
    """The monitor stream's state or its number of viewers changed (the cloud republishes its state)."""

    state: str
    viewers: int


@dataclass(frozen=True)
class QrCodesInView(Event):
    """The set of QR code texts the camera sees changed (an empty set: none in view any more).

    ``frame_at`` is when the frame that showed this set entered the camera process, on ``time.monotonic()``'s
    scale (one clock for every process of the unit), or None when unknown: the QR reader measures from it to
    the access decision (``qr_decision_ms`` in its status). ``sent_at`` (the camera process wrote the event)
    and ``read_at`` (the daemon read it), on the same clock, split that time into the camera process's part,
    the pipe's and the daemon's (``qr_decision_parts_ms``)."""

    texts: frozenset[str]
    frame_at: float | None = None
    sent_at: float | None = None
    read_at: float | None = None


@dataclass(frozen=True)
class CameraWake(Event):
    """Something worth looking at is about to happen (a door opened, a call rang): the camera analyses
    full frames for ``seconds`` even if the picture has not changed yet."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class CaptureTaken(Event):
    """A camera capture was kept (file and row): ``capture_id`` for ``capture.get``, what triggered it
    (``manual``, ``granted``, ``refused``, ``forced_open``, ...), its door and door-log entry if any."""

    capture_id: int
    trigger: str
    door: int | None
    log_id: int | None
    size: int


@dataclass(frozen=True)
class MotionDetected(Event):
    """The camera saw motion (armed, past the cooldown): its door-log entry ``log_id``, the zone (None: the
    whole picture), the moving region's share of the picture, and the capture taken of it (None: none)."""

    door: int
    log_id: int
    zone: str | None
    area: float
    capture_id: int | None
    age_ms: float | None = None


@dataclass(frozen=True)
class PackageDelivered(Event):
    """A delivery key opened the package-room door: its recipients, the key, the door-log entry of kind
    ``package`` (``log_id``), the access decision's entry (``access_log_id``) and the capture (None: none)."""

    door: int
    key_id: str | None
    recipients: tuple[str, ...]
    log_id: int
    access_log_id: int
    capture_id: int | None


@dataclass(frozen=True)
class FaceTemplatesChanged(Event):
    """Face templates were added or removed (enrolment, ``face remove``): the recognition worker reloads them
    now instead of at its next poll of their version. Carries nothing of a face (not forwarded to the cloud)."""
