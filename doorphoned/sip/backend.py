"""The seam between the call logic (asyncio loop) and a SIP stack (its own thread).

The call logic never imports a SIP library: it talks to a :class:`SipBackend` and hears back
through a :class:`SipListener`, always on the asyncio loop. The pjsua2 backend lives in
``doorphoned.sip.pj`` and is imported only when SIP is enabled.
"""

from __future__ import annotations

import ipaddress
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

CallState = Literal["calling", "ringing", "confirmed", "disconnected"]
DtmfMethod = Literal["rfc2833", "sip_info"]


class SipError(RuntimeError):
    """The SIP stack refused an operation (bad URI, no such call, stack not running)."""


@dataclass(frozen=True)
class SipSettings:
    """What the backend needs from the configuration (kept flat so the backend never reads Config)."""

    bind: str = "127.0.0.1"
    port: int = 5060
    tcp: bool = True
    tls_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    public_address: str = ""
    rtp_port: int = 4000
    tcp_max_connections: int = 6
    tcp_max_per_source: int = 4
    tcp_idle_timeout: float = 10.0
    null_audio: bool = False
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722")
    allowed_hosts: frozenset[str] = frozenset()
    blocked_callers: frozenset[str] = frozenset()  # uri_key()s of app accounts without intercom permission
    auto_answer: bool = True
    registrar: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    realm: str = "*"
    reg_timeout: int = 300
    max_calls: int = 16
    user_agent: str = "doorphoned"


@dataclass(frozen=True)
class CallQuality:
    """Audio stream figures read from the stack (pjsua2 ``getStreamStat``/``getStreamInfo``)."""

    codec: str = ""
    rx_packets: int = 0
    tx_packets: int = 0
    rx_lost: int = 0
    loss_pct: float = 0.0
    jitter_ms: float = 0.0
    rtt_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"codec": self.codec, "rx_packets": self.rx_packets, "tx_packets": self.tx_packets,
                "rx_lost": self.rx_lost, "loss_pct": round(self.loss_pct, 2), "jitter_ms": round(self.jitter_ms, 2),
                "rtt_ms": round(self.rtt_ms, 2)}


@dataclass(frozen=True)
class IncomingCall:
    """An INVITE the backend already answered (``admitted``) or rejected with 403."""

    call_id: int
    peer: str  # the remote URI
    source: str  # host:port the INVITE came from
    admitted: bool
    mono: float  # time.monotonic() when it arrived
    answered_mono: float = 0.0
    refusal: str = ""  # why it was not admitted: not_allowed | intercom_off | malformed | busy | overloaded | ...
    code: int = 403  # the answer a refused INVITE got
    count: int = 1  # refused INVITEs this report stands for (the SIP process reports them in batches)


@dataclass(frozen=True)
class Registration:
    configured: bool
    active: bool = False
    code: int = 0
    text: str = ""
    expires: int = 0


@dataclass
class BackendStats:
    rejected: int = 0
    admitted: int = 0
    outgoing: int = 0
    dtmf_refused: int = 0  # RFC 2833 digits from an address that is not the call's peer
    extra: dict[str, Any] = field(default_factory=dict)


class SipListener(Protocol):
    """What the backend reports; every method is called on the asyncio loop."""

    def on_incoming(self, call: IncomingCall) -> None: ...
    def on_call_state(self, call_id: int, state: CallState, code: int, reason: str, mono: float) -> None: ...
    def on_dtmf(self, call_id: int, digit: str, method: DtmfMethod, mono: float) -> None: ...
    def on_quality(self, call_id: int, quality: CallQuality) -> None: ...
    def on_registration(self, registration: Registration) -> None: ...
    def on_backend_died(self, error: str) -> None: ...


class SipBackend(ABC):
    """A SIP user agent owned by one thread.

    Must override: :meth:`start`, :meth:`stop`, :meth:`call`, :meth:`hangup`, :attr:`alive`.
    May override: :meth:`registration` (default: not configured), :meth:`stats`, :meth:`quiet_for`,
    :meth:`set_allowed_hosts` (default: unsupported, :class:`SipError`).
    All methods are called from the asyncio loop; implementations marshal to their own thread.
    May set: :attr:`heartbeat`, :attr:`started`, :attr:`pid` (read by the feature for "hung" and status).
    """

    heartbeat: float = 0.0  # time.monotonic() of the SIP thread's last pump; 0 = not reported
    started: bool = True  # listening (a SIP process is alive before pjsua2 is up in it)
    pid: int | None = None  # the process SIP runs in, when it has its own

    @abstractmethod
    async def start(self, listener: SipListener) -> None:
        """Open the transports and start answering; raise :class:`SipError` when that is impossible."""

    @abstractmethod
    async def stop(self) -> None:
        """Hang up every call and release every socket. Idempotent."""

    @abstractmethod
    async def call(self, uri: str, created: Callable[[int], None], headers: tuple[tuple[str, str], ...] = ()) -> int:
        """Send an INVITE to ``uri`` (with ``headers`` added: the monitor URL); return the call id used in
        later reports.

        ``created(call_id)`` must run on the loop *before* any later report about that call: a
        callee can refuse within a millisecond, before the awaiting coroutine resumes.
        """

    @abstractmethod
    async def hangup(self, call_id: int, code: int = 0) -> None:
        """End a call: CANCEL while it rings, BYE once answered; a missing call is not an error."""

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether the stack's thread is still running."""

    def registration(self) -> Registration:
        return Registration(configured=False)

    async def quiet_for(self, call_id: int) -> float:
        """Seconds since the call last received RTP; 0 when the backend cannot tell."""
        return 0.0

    def stats(self) -> BackendStats:
        return BackendStats()

    async def set_allowed_hosts(self, hosts: frozenset[str]) -> None:
        """Replace the addresses calls are admitted from (allowed peers re-resolved)."""
        raise SipError(f"{type(self).__name__} cannot change its allowed peers while running")


# ---------------------------------------------------------------- pure helpers


def resolve_hosts(names: tuple[str, ...]) -> frozenset[str]:
    """Allowed peers as IP addresses: host names are resolved when SIP starts and then every
    ``sip.resolve_every`` seconds (a unit that boots before its network must not refuse its PBX forever)."""
    out: set[str] = set()
    for name in names:
        try:
            out.add(str(ipaddress.ip_address(name)))
        except ValueError:
            try:
                out.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
            except OSError:
                continue
    return frozenset(out)


def literal_hosts(names: tuple[str, ...]) -> frozenset[str]:
    """Only the peers given as IP addresses (no DNS)."""
    out = set()
    for name in names:
        try:
            out.add(str(ipaddress.ip_address(name)))
        except ValueError:
            continue
    return frozenset(out)


def source_host(source: str) -> str:
    """``"127.0.0.1:5061"`` / ``"[::1]:5061"`` -> the address part."""
    if source.startswith("["):
        return source[1:].partition("]")[0]
    return source.rpartition(":")[0] if source.count(":") == 1 else source


def peer_allowed(source: str, allowed: frozenset[str]) -> bool:
    """Calls are taken only from configured peers (and the registrar, resolved into ``allowed``)."""
    return source_host(source) in allowed


def uri_key(uri: str) -> str:
    """``"App" <sip:Flat12@10.0.0.5:5062;transport=udp>`` -> ``flat12@10.0.0.5``: who, ignoring port and params."""
    inner = uri.split("<", 1)[1].split(">", 1)[0] if "<" in uri else uri
    inner = inner.split(";", 1)[0].strip()
    inner = inner.split(":", 1)[1] if inner.lower().startswith(("sip:", "sips:")) else inner
    user, _, host = inner.rpartition("@")
    host = host.split(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
    return f"{user}@{host}".lower() if user else host.lower()
