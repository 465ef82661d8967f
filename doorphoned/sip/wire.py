"""Typed messages between the daemon and its SIP process, and their framing on a stream socket.

Both ends are this package in two processes started together (the daemon and ``doorphoned.sip.child``
over a socketpair), so frames are pickled dataclasses: typed, and nothing from the network is ever
unpickled (what the network sends is parsed by pjsip in the child and crosses here as plain fields).
Each frame is a 4-byte big-endian length, then the pickle.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass, field

from doorphoned.sip.backend import (
    BackendStats,
    CallQuality,
    CallState,
    DtmfMethod,
    IncomingCall,
    Registration,
    SipListener,
    SipSettings,
)

MAX_FRAME = 1 << 20
_LENGTH = struct.Struct("!I")


# ---------------------------------------------------------------- events: SIP stack -> the feature


@dataclass(frozen=True)
class Incoming:
    call: IncomingCall

    def to(self, listener: SipListener) -> None:
        listener.on_incoming(self.call)


@dataclass(frozen=True)
class StateChanged:
    call_id: int
    state: CallState
    code: int
    reason: str
    mono: float

    def to(self, listener: SipListener) -> None:
        listener.on_call_state(self.call_id, self.state, self.code, self.reason, self.mono)


@dataclass(frozen=True)
class DtmfReceived:
    call_id: int
    digit: str = field(repr=False)  # a door code's key: never in a repr or a log line
    method: DtmfMethod
    mono: float

    def to(self, listener: SipListener) -> None:
        listener.on_dtmf(self.call_id, self.digit, self.method, self.mono)


@dataclass(frozen=True)
class QualityRead:
    call_id: int
    quality: CallQuality

    def to(self, listener: SipListener) -> None:
        listener.on_quality(self.call_id, self.quality)


@dataclass(frozen=True)
class RegistrationChanged:
    registration: Registration

    def to(self, listener: SipListener) -> None:
        listener.on_registration(self.registration)


@dataclass(frozen=True)
class BackendDied:
    error: str

    def to(self, listener: SipListener) -> None:
        listener.on_backend_died(self.error)


SipEvent = Incoming | StateChanged | DtmfReceived | QualityRead | RegistrationChanged | BackendDied


# ---------------------------------------------------------------- process plumbing


@dataclass(frozen=True)
class Start:
    """First frame to the child: the settings and the daemon's log level."""

    settings: SipSettings
    log_level: int


@dataclass(frozen=True)
class Started:
    pid: int


@dataclass(frozen=True)
class StartFailed:
    error: str


@dataclass(frozen=True)
class Beat:
    """Every second from the child: the pjsua2 thread's last pump (CLOCK_MONOTONIC, shared by both
    processes), its counters and the registration."""

    heartbeat: float
    stats: BackendStats
    registration: Registration


@dataclass(frozen=True)
class LogLine:
    """A log record of the child, logged again by the daemon (one log, one place)."""

    name: str
    level: int
    message: str


@dataclass(frozen=True)
class Created:
    """An outgoing call got its id: sent before any report about that call (see SipBackend.call)."""

    request: int
    call_id: int


# ---------------------------------------------------------------- requests: the feature -> SIP stack


@dataclass(frozen=True)
class Dial:
    uri: str
    headers: tuple[tuple[str, str], ...] = ()  # extra INVITE headers (X-Monitor-URL)


@dataclass(frozen=True)
class Hangup:
    call_id: int
    code: int = 0


@dataclass(frozen=True)
class QuietFor:
    call_id: int


@dataclass(frozen=True)
class SetAllowed:
    hosts: frozenset[str]


@dataclass(frozen=True)
class Crash:
    """Make the child's pjsua2 thread die (tests of the restart path)."""


@dataclass(frozen=True)
class Abort:
    """Make the child abort as pjlib does on a failed assertion (tests of the restart path)."""


@dataclass(frozen=True)
class Stop:
    pass


Operation = Dial | Hangup | QuietFor | SetAllowed | Crash | Abort | Stop


@dataclass(frozen=True)
class Request:
    id: int
    op: Operation


@dataclass(frozen=True)
class Reply:
    id: int
    value: object = None
    error: str = ""


def encode(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read(reader: asyncio.StreamReader) -> object:
    """The next message; raises ``asyncio.IncompleteReadError`` at the end of the stream."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise ValueError(f"SIP process frame of {length} bytes")
    return pickle.loads(await reader.readexactly(length))  # noqa: S301 - our own child, never the network
