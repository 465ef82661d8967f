"""What features need of each other, as small typed interfaces (Protocols).

A feature receives these, never the daemon and never another feature's class: the access gate opens a
door through :class:`Doors` without importing the relay folder, so the relay code can change (or a
third-party lock bridge stand in) without the gate noticing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from doorphoned.core.events import Event
from doorphoned.core.presentations import Credential


class LockError(RuntimeError):
    """A lock could not carry out an unlock or lock; ``reason`` is machine-readable (``lock_fault``,
    ``board_unreachable``, ...), ``detail`` the human line."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Door(Protocol):
    async def open(self) -> None:
        """Unlock for the door's hold time; raises :class:`LockError` when the lock did not move."""


class Doors(Protocol):
    @property
    def door_ids(self) -> frozenset[int]:
        """Every configured door, running or not."""

    def door(self, door_id: int) -> Door:
        """The running door; raises ``LookupError`` when it is unknown or not running."""


class GateOutcome(Protocol):
    @property
    def opened(self) -> bool:
        """Whether the door was opened (granted, recorded and the lock moved)."""

    @property
    def granted(self) -> bool:
        """Whether the gate granted the request (it may still not have opened: a lock fault)."""

    @property
    def reason(self) -> str:
        """The decision's machine-readable reason (``granted``, ``unknown``, ``locked_out``, ...)."""

    @property
    def error(self) -> str:
        """Why a granted request did not open ('' when it did)."""

    @property
    def error_reason(self) -> str:
        """``storage`` when the decision could not be recorded, a lock's reason after a lock fault."""


class Gate(Protocol):
    """The access gate as readers, calls and commands see it: they present what they saw, the gate
    decides, records and opens (``access/gate.py``)."""

    async def present(self, credential: Credential, doors: Sequence[int]) -> Sequence[GateOutcome]:
        """A reader saw ``credential``: request each of its doors (and keep the keypad lockout)."""

    async def request(self, credential: Credential, door_id: int) -> GateOutcome:
        """Decide, record and open one door for ``credential``."""


class Recorders(Protocol):
    """Where a decision's events can be stored inside the gate's record transaction (the cloud outbox)."""

    def add_recorder(self, recorder: Callable[[Event], None],
                     rolled_back: Callable[[], None] | None = None) -> Callable[[], None]:
        """Have ``recorder`` store each decision's events with the door-log entry; returns its removal."""


@dataclass(frozen=True)
class DoorState:
    """One door as the cloud reports it: lock and contact."""

    door: int
    unlocked: bool
    is_open: bool | None



@dataclass(frozen=True)
class MonitorGrant:
    """A one-time URL to the live monitor stream for one session (``url`` embeds the credential: a secret,
    handed only to the one it is for, never logged)."""

    id: str
    url: str
    expires: float  # epoch seconds: unused by then, the grant dies
    cap_seconds: int


class MonitorGrants(Protocol):
    """One-time monitor URLs, as calls and the cloud need them (``camera/monitor_link.MonitorLink``); the
    composition root hands ``None`` where the monitor is off."""

    async def issue(self, purpose: str, cap: int | None = None) -> MonitorGrant:
        """A grant for one session of at most ``cap`` seconds; raises ``RuntimeError`` when impossible."""

    async def revoke(self, grant_id: str) -> bool:
        """End the grant and a session using it; False when it was not live any more."""

    async def viewers(self) -> dict[str, Any]:
        """The viewers now (``viewers``: each with its ``grant`` id and RTCP figures) and the encoder's rates."""


class Snapshots(Protocol):
    """Automatic captures as other features ask for them (``camera/capture_feature.CaptureFeature``): a call
    that rings names its capture in its ring event and call-history row."""

    async def capture_for(self, trigger: str, door: int | None) -> int | None:
        """Take a capture for ``trigger`` now if that trigger is switched on; its id, or None (off, failed)."""


class ChunkUploader(Protocol):
    """The cloud link's acknowledged chunked upload (``cloud/feature.py``), for a command of another
    feature that sends a file to the cloud (``capture.get``) without importing the cloud folder."""

    async def upload(self, data: bytes, chunk_size: int, **fields: object) -> dict[str, object]:
        """Publish ``data`` in chunks under the running command's response topic, each after the broker
        acknowledged the one before; returns the upload's id, topic, chunk count and SHA-256 (and
        ``fields``). Raises ``CommandError`` when the link goes down or a chunk is not acknowledged."""
        ...
