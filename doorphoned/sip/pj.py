"""The pjsua2 backend: one thread owns pjsua2, everything else asks it through a queue.

Why one thread: pjsua2's Python objects and its library state are not safe to touch from two
threads, and the asyncio loop must never block on SIP. So the thread created here calls
``libCreate`` and then only ever pumps ``libHandleEvents`` (5 ms) and runs queued commands; with
``threadCnt = 0`` and ``mainThreadOnly`` every pjsua2 callback arrives on this thread, and
with the media ``threadCnt = 0`` RTP (and so RFC 2833 DTMF) is read by the same poll, without a
hand-over. Reports go to the loop with ``call_soon_threadsafe``.

Admission is decided right here, in ``onIncomingCall``: a flood of INVITEs from strangers is
answered 403 without ever reaching the loop, so it cannot crowd out the access path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import functools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pjsua2 as pj

from doorphoned.sip import guard, lastresort
from doorphoned.sip.backend import (
    BackendStats,
    CallQuality,
    CallState,
    DtmfMethod,
    IncomingCall,
    Registration,
    SipBackend,
    SipError,
    SipListener,
    SipSettings,
    peer_allowed,
    source_host,
    uri_key,
)
from doorphoned.sip.shed import ADMIT, Shedder, Verdict
from doorphoned.sip.tcpcap import TcpCap
from doorphoned.sip.wire import (
    BackendDied,
    DtmfReceived,
    Incoming,
    QualityRead,
    RegistrationChanged,
    SipEvent,
    StateChanged,
)

log = logging.getLogger(__name__)

POLL_MS = 50  # idle wake-ups; a queued command wakes the poll at once (see PjBackend._wake)
WAKE = b"\r\n\r\n"  # a SIP keep-alive (RFC 5626): pjsip drops it silently
QUALITY_EVERY = 1.0
REFUSALS_EVERY = 0.25  # seconds: refused INVITEs are reported to the daemon in batches (see _report_refusals)
TCP_CHECK_EVERY = 0.25  # seconds between rounds of the TCP connection bounds (doorphoned.sip.tcpcap)
UDP_RCVBUF = 4 * 1024 * 1024  # bytes asked for the SIP UDP socket (~2,000 INVITEs with SDP)
_CODEC_IDS = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/16000", "GSM": "GSM/8000",
              "SPEEX": "speex/8000", "ILBC": "iLBC/8000"}
_STATES: dict[int, CallState] = {
    pj.PJSIP_INV_STATE_CALLING: "calling", pj.PJSIP_INV_STATE_EARLY: "ringing",
    pj.PJSIP_INV_STATE_CONFIRMED: "confirmed", pj.PJSIP_INV_STATE_DISCONNECTED: "disconnected"}


class _Endpoint(pj.Endpoint):  # type: ignore[misc]
    """The one Endpoint, with pjsua2's only hook that runs before pjsua creates a call's media."""

    agent: _Agent | None = None
    tcp_cap: TcpCap | None = None

    def onSelectAccount(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        try:
            if self.agent is not None:
                self.agent.select_account(prm)
        except Exception:
            log.exception("SIP: admission of an incoming request failed")

    def onTransportState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        """pjsip reports each accepted connection here before it accepts the next one: the TCP bounds run
        at once, so a flood of connections cannot take pjlib's 64 handles between two timed rounds."""
        try:
            if self.tcp_cap is not None and prm.state == pj.PJSIP_TP_STATE_CONNECTED:
                self.tcp_cap.check()
        except Exception:
            log.exception("SIP: the TCP connection bounds failed")


_ENDPOINT: _Endpoint | None = None


def _endpoint() -> _Endpoint:
    """pjsua2's Endpoint is a process-wide singleton: one Python object, reused by every restart.

    A second ``pj.Endpoint()`` while an old one is still referenced (a traceback keeps a failed
    backend alive) raises from C++ on an unregistered thread, which aborts the process.
    ``libCreate``/``libDestroy`` on the one object are what start and stop the stack.
    """
    global _ENDPOINT
    if _ENDPOINT is None:
        _ENDPOINT = _Endpoint()
    return _ENDPOINT


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    """pjsip's own log lines into Python logging (they would otherwise go to stdout)."""

    def write(self, entry: Any) -> None:
        level = logging.WARNING if entry.level <= 1 else logging.DEBUG
        log.log(level, "pjsip: %s", entry.msg.rstrip())


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """pjsua2 callbacks never let an exception out: through SWIG it would reach C++ inside pjsip."""

    @functools.wraps(method)
    def run(self: Any, prm: Any) -> None:
        try:
            method(self, prm)
        except Exception:
            log.exception("SIP callback %s failed", method.__name__)

    return run


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, agent: _Agent, sink: bool = False) -> None:
        super().__init__()
        self.agent = agent
        self.sink = sink

    @_guarded
    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        if self.sink:
            self.agent.refuse(prm)
        else:
            self.agent.incoming(prm)

    @_guarded
    def onRegState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        self.agent.reg_state()


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, agent: _Agent, account: _Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.agent = agent
        self.last_rx = 0
        self.last_rx_change = time.monotonic()
        self.quality: CallQuality | None = None
        self.peer_hosts: set[str] = set()  # where this call's RTP may come from (SIP source, SDP address)
        self.source = ""  # the address an incoming call came from

    @_guarded
    def onCallTransferRequest(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        """REFER would make the unit call any address the peer names (toll fraud through the registrar),
        with no ring or call timer and no history: refused."""
        prm.statusCode = 603
        log.warning("call %d: transfer (REFER) to %s refused", self.getId(), str(prm.dstUri)[:80])

    @_guarded
    def onCallReplaceRequest(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        """INVITE with Replaces would take over a dialog without passing admission: refused."""
        prm.statusCode = 603
        log.warning("call %d: INVITE with Replaces refused", self.getId())

    def onCallRedirected(self, prm: Any) -> int:  # noqa: N802 - pjsua2's name
        """A 3xx must not send the unit's INVITE (and credentials) to another address."""
        log.warning("call %d: redirect to %s refused", self.getId(), str(prm.targetUri)[:80])
        return int(pj.PJSIP_REDIRECT_REJECT)

    @_guarded
    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        self.agent.call_state(self)

    @_guarded
    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        self.agent.media_state(self)

    @_guarded
    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        method: DtmfMethod = "sip_info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc2833"
        if method == "rfc2833" and not self._rtp_from_peer():
            return
        self.agent.report(DtmfReceived(self.getId(), str(prm.digit), method, time.monotonic()))

    def _rtp_from_peer(self) -> bool:
        """pjmedia takes RTP from any address: anyone who can reach the RTP port could send telephone-events.
        The digit arrives while its packet is processed, so the transport's last source address is that
        packet's: it must be the peer's (its SIP address or the address its SDP gave)."""
        info = self.getInfo()  # kept: iterating a temporary's vector reads freed memory
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            source = source_host(str(self.getMedTransportInfo(media.index).srcRtpName))
            if source in self.peer_hosts:
                return True
            self.agent.refused_rtp(self.getId(), source)
            return False
        return False


@dataclass
class _Command:
    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any]


def _receive_buffer(size: int) -> Any:
    """Socket options asking for a ``size``-byte receive buffer (the kernel caps it at net.core.rmem_max)."""
    option = pj.SockOpt()
    option.level, option.optName = socket.SOL_SOCKET, socket.SO_RCVBUF
    option.setOptValInt(size)
    params = pj.SockOptParams()
    params.sockOpts.append(option)
    return params


class _Agent:
    """Everything that runs on the pjsua2 thread."""

    def __init__(self, backend: PjBackend, settings: SipSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.ep = _endpoint()
        self.account: _Account | None = None
        self.sink: _Account | None = None  # takes what is not admitted, with socketless (loop) media
        self.shedder = Shedder(settings.allowed_hosts)
        self.verdict = ADMIT
        self.refusals: list[tuple[_Call, Any]] = []  # hung up after the callback (see _refuse_pending)
        self.unreported: IncomingCall | None = None  # the last refusal not yet reported (see _report_refusals)
        self.refusals_reported = -REFUSALS_EVERY
        self.last_resort: Any = None  # answers what no pjsip module handled (doorphoned.sip.lastresort)
        self.guard: Any = None  # answers what must reach no other module (doorphoned.sip.guard)
        self.calls: dict[int, _Call] = {}
        self.dead: list[_Call] = []
        self.writer = _LogWriter()
        self.audio = ""
        self.next_quality = 0.0
        self.last_rtp_warning = 0.0

    def report(self, event: SipEvent) -> None:
        self.backend.deliver(event)

    def refused_rtp(self, call_id: int, source: str) -> None:
        """A telephone-event from an address that is not the call's peer: ignored, logged at most every 5 s."""
        self.backend.counts.dtmf_refused += 1
        now = time.monotonic()
        if now - self.last_rtp_warning >= 5.0:
            self.last_rtp_warning = now
            log.warning("call %d: DTMF in RTP from %s, which is not the caller: ignored (%d so far)", call_id,
                        source, self.backend.counts.dtmf_refused)

    # ---- life cycle
    def create(self) -> None:
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = self.settings.max_calls
        cfg.uaConfig.userAgent = self.settings.user_agent
        cfg.medConfig.threadCnt = 0
        cfg.logConfig.writer = self.writer
        # pjsip's level 3+ writes ~10 lines per INVITE, each a Python call holding the GIL: under a flood
        # that is time taken from the loop. Those details only with the daemon's trace level.
        detail = logging.getLogger().isEnabledFor(logging.DEBUG)
        cfg.logConfig.level = 4 if detail else 2
        cfg.logConfig.consoleLevel = cfg.logConfig.level
        self.ep.libInit(cfg)
        self._audio()
        self._transports()
        self._codecs()
        self.ep.libStart()
        self._account()
        self.last_resort = lastresort.install(self._answered_unhandled)
        self.guard = guard.install(self._answered_by_guard, time.monotonic)

    def _audio(self) -> None:
        """The unit's microphone and speaker when it has a sound card; the null device otherwise."""
        manager = self.ep.audDevManager()
        if self.settings.null_audio or manager.getDevCount() == 0:
            manager.setNullDev()
            self.audio = "null"
        else:
            self.audio = "default"
        log.info("SIP audio: %s device", self.audio)

    def _transports(self) -> None:
        udp = self._transport_config()
        # a burst of INVITEs outruns the SIP thread: what the socket cannot hold is lost until the
        # sender retransmits (timer A), so the UDP socket gets a large receive buffer
        udp.sockOptParams = _receive_buffer(UDP_RCVBUF)
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, udp)
        if self.settings.tcp:
            self.ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, self._transport_config())
        if self.settings.tls_port:
            tls = pj.TransportConfig()
            tls.port = self.settings.tls_port
            tls.boundAddress = self.settings.bind
            if self.settings.public_address:
                tls.publicAddress = self.settings.public_address
            tls.tlsConfig.certFile = self.settings.tls_cert
            tls.tlsConfig.privKeyFile = self.settings.tls_key
            self.ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tls)

    def _transport_config(self) -> Any:
        tcfg = pj.TransportConfig()
        tcfg.port = self.settings.port
        tcfg.boundAddress = self.settings.bind
        if self.settings.public_address:
            tcfg.publicAddress = self.settings.public_address
        return tcfg

    def _codecs(self) -> None:
        wanted = [_CODEC_IDS.get(c.upper(), c) for c in self.settings.codecs]
        for info in self.ep.codecEnum2():
            codec_id = str(info.codecId)
            match = next((i for i, w in enumerate(wanted) if codec_id.lower().startswith(w.lower())), None)
            self.ep.codecSetPriority(codec_id, 0 if match is None else 250 - match)

    def _account(self) -> None:
        s = self.settings
        acfg = pj.AccountConfig()
        host = s.public_address or s.bind
        acfg.idUri = f"sip:{s.username or 'door'}@{host}:{s.port}"
        acfg.mediaConfig.lockCodecEnabled = False  # no re-INVITE to pick one codec: monitors and sipp dislike it
        acfg.mediaConfig.transportConfig.port = s.rtp_port
        acfg.mediaConfig.transportConfig.portRange = 2000
        acfg.mediaConfig.transportConfig.boundAddress = s.bind
        if s.registrar:
            acfg.idUri = f"sip:{s.username}@{s.registrar.removeprefix('sip:').split(';')[0]}"
            acfg.regConfig.registrarUri = s.registrar
            acfg.regConfig.timeoutSec = s.reg_timeout
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", s.realm, s.username, 0, s.password))
        account = _Account(self)
        account.create(acfg, True)
        self.account = account
        scfg = pj.AccountConfig()
        scfg.idUri = f"sip:{s.username or 'door'}@{host}:{s.port}"
        scfg.mediaConfig.useLoopMedTp = True  # a refused INVITE must cost no socket (see doorphoned.sip.shed)
        scfg.mediaConfig.enableLoopback = False
        sink = _Account(self, sink=True)
        sink.create(scfg, False)
        self.sink = sink
        self.ep.agent = self

    def destroy(self) -> None:
        if self.calls:  # say goodbye: BYE/CANCEL go out before the transports close
            try:
                self.ep.hangupAllCalls()
                for _ in range(20):
                    self.ep.libHandleEvents(10)
            except Exception:
                log.debug("hangup before destroy failed", exc_info=True)
        self.calls.clear()
        self.dead.clear()
        self.ep.agent = None
        if self.last_resort is not None:
            self.last_resort.unregister()
        for acc in (self.account, self.sink):
            if acc is not None:
                acc.shutdown()
        self.account = self.sink = None
        self.ep.libDestroy(0 if self.settings.registrar else pj.PJSUA_DESTROY_NO_NETWORK)

    # ---- the pump
    def pump(self) -> None:
        # Python wrappers of ended calls are dropped outside their own callbacks, and before pjsua can give
        # their slot to a new call: a wrapper's destructor hangs up whatever call holds its id (603).
        self.dead.clear()
        self.ep.libHandleEvents(POLL_MS)
        self.dead.clear()
        self._refuse_pending()
        self.dead.clear()
        now = time.monotonic()
        self._report_refusals(now)
        if now >= self.next_quality:
            self.next_quality = now + QUALITY_EVERY
            for call in list(self.calls.values()):
                self._watch_media(call, now)

    def _refuse(self, call: _Call, op: Any, prm: Any) -> None:
        """Hang up a refused INVITE from inside ``onIncomingCall`` when that is safe, else after the poll.

        For an INVITE without SDP, pjsua2 2.15.1 runs ``onIncomingCall`` from inside media creation and
        frees the call's cloned rdata after it returns; a hang-up inside the callback has already reset
        the call (freeing it), so pjsua2 then frees NULL and pjlib aborts on ``pjsip_rx_data_free_cloned:
        Assertion 'rdata'``. Those are hung up once the poll is over. INVITEs with SDP are hung up at once
        (pjsua delays that hang-up itself), so their call slot is free for the next INVITE of the same
        poll: the wheel has only 4 slots, and a burst of refusals must not turn into "486 too many calls".
        """
        whole = str(prm.rdata.wholeMsg)
        if whole.partition("\r\n\r\n")[2].strip():
            try:
                call.hangup(op)
            except pj.Error as exc:
                log.debug("refusing call %d: %s", prm.callId, exc.info())
            self.dead.append(call)
            return
        self.refusals.append((call, op))

    def _refuse_pending(self) -> None:
        """Hang up the INVITEs without SDP refused during the last poll (see :meth:`_refuse`)."""
        while self.refusals:
            call, op = self.refusals.pop(0)
            try:
                call.hangup(op)
            except pj.Error as exc:
                log.debug("refusing call %d: %s", call.getId(), exc.info())
            self.dead.append(call)

    def _watch_media(self, call: _Call, now: float) -> None:
        quality = read_quality(call)
        if quality is None:
            return
        call.quality = quality
        if quality.rx_packets != call.last_rx:
            call.last_rx, call.last_rx_change = quality.rx_packets, now

    def _answered_unhandled(self, code: int) -> None:
        self._answered_by_guard(f"unhandled_{code}")

    def _answered_by_guard(self, key: str) -> None:
        self.shedder.counts[key] = self.shedder.counts.get(key, 0) + 1

    # ---- admission (before pjsua creates media: see doorphoned.sip.shed)
    def select_account(self, prm: Any) -> None:
        """Judge an incoming INVITE; what is not admitted goes to the sink account (no sockets)."""
        if self.sink is None or " INVITE/" not in str(prm.rdata.info):
            return
        # pjsua has just given this INVITE a call slot, possibly one a call ended earlier in this same poll
        # still names: its wrapper must go now, while the new call has no session (so the wrapper's
        # destructor hangs nothing up); later it would hang up the new call (603).
        self.dead.clear()
        live = [c.source for c in self.calls.values()]
        self.verdict = self.shedder.verdict(str(prm.rdata.srcAddress), str(prm.rdata.wholeMsg), live,
                                            time.monotonic())
        if not self.verdict.admitted:
            prm.accountIndex = self.sink.getId()
        elif self.account is not None:  # pjsua matches accounts by URI and could pick the sink (same host)
            prm.accountIndex = self.account.getId()

    def refuse(self, prm: Any) -> None:
        """Answer an INVITE that reached the sink account with the code its verdict gave."""
        assert self.sink is not None
        mono = time.monotonic()
        verdict, self.verdict = self.verdict, ADMIT
        if verdict.admitted:  # not judged (cannot happen: only select_account sends calls here)
            verdict = Verdict(503, "overloaded", retry_after=1)
        call = _Call(self, self.sink, prm.callId)
        op = pj.CallOpParam()
        op.statusCode = verdict.code
        if verdict.retry_after:
            header = pj.SipHeader()
            header.hName, header.hValue = "Retry-After", str(verdict.retry_after)
            op.txOption.headers.append(header)
        self.backend.counts.rejected += 1
        self._refuse(call, op, prm)
        self.unreported = IncomingCall(prm.callId, "", str(prm.rdata.srcAddress), False, mono,
                                       refusal=verdict.reason, code=verdict.code,
                                       count=(self.unreported.count + 1) if self.unreported else 1)
        self._report_refusals(mono)

    def _report_refusals(self, now: float) -> None:
        """Refusals go to the daemon at most every REFUSALS_EVERY s, the last one standing for all since the
        previous report: in a burst one frame per refusal cost the SIP thread ~7 % and the daemon's loop
        (where the doors are served) a wake-up each, for a count and a rate-limited log line."""
        if self.unreported is not None and now - self.refusals_reported >= REFUSALS_EVERY:
            self.report(Incoming(self.unreported))
            self.unreported, self.refusals_reported = None, now

    # ---- calls
    def incoming(self, prm: Any) -> None:
        assert self.account is not None
        call = _Call(self, self.account, prm.callId)
        try:
            self._admit(call, prm)
        except Exception:
            log.exception("incoming call %d: refusing it with 500", prm.callId)
            op = pj.CallOpParam()
            op.statusCode = 500
            self.calls.pop(prm.callId, None)
            self._refuse(call, op, prm)

    def _admit(self, call: _Call, prm: Any) -> None:
        mono = time.monotonic()
        source = str(prm.rdata.srcAddress)
        refusal, peer = "", ""
        if not peer_allowed(source, self.settings.allowed_hosts):
            refusal = "not_allowed"
        else:
            peer = str(call.getInfo().remoteUri)
            if uri_key(peer) in self.settings.blocked_callers:
                refusal = "intercom_off"
        op = pj.CallOpParam()
        if refusal:  # not_allowed only when the allowed peers changed since select_account
            op.statusCode = 403
            self.backend.counts.rejected += 1
            self._refuse(call, op, prm)
            self.report(Incoming(IncomingCall(prm.callId, peer, source, False, mono, refusal=refusal)))
            return
        self.backend.counts.admitted += 1
        call.source = source_host(source)
        call.peer_hosts.add(call.source)
        self.calls[prm.callId] = call
        answered = 0.0
        if self.settings.auto_answer:
            op.statusCode = 200
            call.answer(op)
            answered = time.monotonic()
        self.report(Incoming(IncomingCall(prm.callId, peer, source, True, mono, answered)))

    def media_state(self, call: _Call) -> None:
        """Connect each active audio stream to the microphone and the speaker (or the null device).

        Without this the unit would send no RTP: the visitor would not be heard, and callees that end
        silent calls (RTP timeout) would hang up.
        """
        manager = self.ep.audDevManager()
        info = call.getInfo()  # kept: iterating a temporary's vector reads freed memory
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            with contextlib.suppress(pj.Error):
                call.peer_hosts.add(source_host(str(call.getStreamInfo(index).remoteRtpAddress)))
            stream = call.getAudioMedia(index)
            manager.getCaptureDevMedia().startTransmit(stream)
            stream.startTransmit(manager.getPlaybackDevMedia())
        # The codec is known from here on: a call shorter than one quality period (or whose process got
        # little CPU) still reports it when it ends, after its stream is gone.
        call.quality = read_quality(call) or call.quality

    def call_state(self, call: _Call) -> None:
        info = call.getInfo()
        state = _STATES.get(info.state)
        if state is None:
            return
        call_id = info.id
        if state == "confirmed":  # RTP silence counts from the answer, not from the INVITE
            call.last_rx_change = time.monotonic()
        if state == "disconnected":
            quality = read_quality(call) or call.quality
            if quality is not None:
                self.report(QualityRead(call_id, quality))
            self.calls.pop(call_id, None)
            self.dead.append(call)
        self.report(StateChanged(call_id, state, int(info.lastStatusCode), str(info.lastReason),
                                 time.monotonic()))

    def make_call(self, uri: str, created: Callable[[int], None], headers: tuple[tuple[str, str], ...] = ()) -> int:
        assert self.account is not None
        call = _Call(self, self.account)
        failure = ""
        op = pj.CallOpParam(True)
        for name, value in headers:
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            op.txOption.headers.append(header)
        try:
            call.makeCall(uri, op)
        except pj.Error as exc:
            failure = str(exc.info())
        if failure:
            # pjsua took a call slot even so: the wrapper is dropped here, on this thread, at the next
            # pump (never by Python's collector on another thread, which would clear a live call's slot).
            self.dead.append(call)
            del call
            raise SipError(f"cannot call {uri}: {failure}")
        self.backend.counts.outgoing += 1
        self.shedder.outgoing(time.monotonic())
        call_id = int(call.getId())
        self.calls[call_id] = call
        self.backend.deliver_fn(created, call_id)  # queued ahead of this call's next state report
        return call_id

    def hangup(self, call_id: int, code: int) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        quality = read_quality(call)
        if quality is not None:
            call.quality = quality
        op = pj.CallOpParam()
        if code:
            op.statusCode = code
        try:
            call.hangup(op)
        except pj.Error as exc:
            log.debug("hangup of call %d: %s", call_id, exc.info())

    def quiet_for(self, call_id: int) -> float:
        """Seconds since the call last received RTP (for the RTP timeout)."""
        call = self.calls.get(call_id)
        return 0.0 if call is None else time.monotonic() - call.last_rx_change

    def reg_state(self) -> None:
        self.report(RegistrationChanged(self.registration()))

    def registration(self) -> Registration:
        if self.account is None or not self.settings.registrar:
            return Registration(configured=False)
        info = self.account.getInfo()
        return Registration(True, bool(info.regIsActive), int(info.regStatus), str(info.regStatusText),
                            int(info.regExpiresSec) if info.regIsActive else 0)


def openssl_version() -> str:
    """The OpenSSL that pjsua2 loaded (the wheel bundles its own, used for SIP over TLS), read from the
    library itself; "" when none is loaded."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libcrypto" in line and "/" in line}
    # Python's own ssl module loads the system's libcrypto too: the wheel's (in pjsua2_python.libs) first
    for path in sorted(paths, key=lambda p: "pjsua2" not in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("OpenSSL_version", "SSLeay_version"):  # 1.1+, 1.0.x
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_int]
                return str(fn(0).decode(errors="replace"))
    return ""


def read_quality(call: Any) -> CallQuality | None:
    """The first audio stream's figures, or None when the call has no active audio stream."""
    try:
        info = call.getInfo()
        index = next((m.index for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO
                      and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE), None)
        if index is None:
            return None
        stat = call.getStreamStat(index)
        stream = call.getStreamInfo(index)
    except pj.Error:
        return None
    rx, tx = stat.rtcp.rxStat, stat.rtcp.txStat
    expected = rx.pkt + rx.loss
    return CallQuality(
        codec=f"{stream.codecName}/{stream.codecClockRate}", rx_packets=int(rx.pkt), tx_packets=int(tx.pkt),
        rx_lost=int(rx.loss), loss_pct=100.0 * rx.loss / expected if expected else 0.0,
        jitter_ms=rx.jitterUsec.mean / 1000.0 if rx.jitterUsec.n else 0.0,
        rtt_ms=stat.rtcp.rttUsec.mean / 1000.0 if stat.rtcp.rttUsec.n else 0.0)


class PjBackend(SipBackend):
    """pjsua2 in one dedicated thread (see the module docstring)."""

    def __init__(self, settings: SipSettings) -> None:
        self.settings = settings
        self.counts = BackendStats()
        self.counts.extra["openssl"] = openssl_version()
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: SipListener | None = None
        self._stopping = threading.Event()
        self._died = threading.Event()
        self._registration = Registration(configured=bool(settings.registrar))
        self.heartbeat = 0.0
        self._tcp_cap: TcpCap | None = None
        self._tcp_task: asyncio.Task[None] | None = None
        # The thread sleeps in libHandleEvents, which only watches pjsip's sockets: a keep-alive sent to
        # our own SIP port is how a queued command wakes it (no 5 ms polling: 1 % CPU when idle).
        self._wake_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._wake_sock.setblocking(False)
        self._wake_to = ("127.0.0.1" if settings.bind in ("", "0.0.0.0") else settings.bind, settings.port)

    async def start(self, listener: SipListener) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sip-pjsua2", daemon=True)
        ports = frozenset(p for p in (self.settings.port if self.settings.tcp else 0, self.settings.tls_port) if p)
        if ports:
            self._tcp_cap = TcpCap(ports, self.settings.tcp_max_connections, self.settings.tcp_max_per_source,
                                   self.settings.tcp_idle_timeout, self.settings.allowed_hosts)
        _endpoint().tcp_cap = self._tcp_cap
        self._thread.start()
        await asyncio.wrap_future(ready)
        if self._tcp_cap is not None:
            self._tcp_task = asyncio.create_task(self._bound_tcp(self._tcp_cap), name="sip-tcp-bounds")

    async def _bound_tcp(self, cap: TcpCap) -> None:
        """Run on the SIP process's loop, not the pjsua2 thread: only file descriptors are touched."""
        while True:
            try:
                self.counts.extra["tcp_connections"] = cap.check()
            except Exception:
                log.exception("SIP: the TCP connection bounds failed this round")
            await asyncio.sleep(TCP_CHECK_EVERY)

    async def stop(self) -> None:
        thread = self._thread
        if self._tcp_task is not None:
            self._tcp_task.cancel()
            self._tcp_task = None
        _endpoint().tcp_cap = None
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        await asyncio.to_thread(thread.join, 10)
        self._thread = None
        self._wake_sock.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._died.is_set()

    async def call(self, uri: str, created: Callable[[int], None], headers: tuple[tuple[str, str], ...] = ()) -> int:
        return int(await self._submit(lambda agent: agent.make_call(uri, created, headers)))

    async def hangup(self, call_id: int, code: int = 0) -> None:
        await self._submit(lambda agent: agent.hangup(call_id, code))

    async def quiet_for(self, call_id: int) -> float:
        return float(await self._submit(lambda agent: agent.quiet_for(call_id)))

    async def crash(self) -> None:
        """Make the SIP thread die (the supervisor's restart path is tested with this)."""
        def boom(agent: _Agent) -> None:
            raise _InjectedCrashError("injected SIP thread crash")
        self._commands.put(_Command(lambda: boom(self._agent), concurrent.futures.Future()))
        self._wake()

    def registration(self) -> Registration:
        return self._registration

    def stats(self) -> BackendStats:
        agent = getattr(self, "_agent", None)
        if agent is not None:
            self.counts.extra["answered"] = dict(agent.shedder.counts) | (self._tcp_cap.counts if self._tcp_cap else {})
        return self.counts

    # ---- loop side plumbing
    async def set_allowed_hosts(self, hosts: frozenset[str]) -> None:
        def apply(agent: _Agent) -> None:
            agent.settings = dataclasses.replace(agent.settings, allowed_hosts=hosts)
            agent.shedder.allowed = hosts
        self.settings = dataclasses.replace(self.settings, allowed_hosts=hosts)
        if self._tcp_cap is not None:
            self._tcp_cap.allowed = hosts
        await self._submit(apply)

    def _submit(self, fn: Callable[[_Agent], Any]) -> asyncio.Future[Any]:
        if not self.alive:
            raise SipError("the SIP stack is not running")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._commands.put(_Command(lambda: fn(self._agent), future))
        self._wake()
        return asyncio.wrap_future(future)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_sock.sendto(WAKE, self._wake_to)

    def deliver(self, event: SipEvent) -> None:
        """From the SIP thread: hand ``event`` to the listener on the loop."""
        if isinstance(event, RegistrationChanged):
            self._registration = event.registration
        if self._listener is not None:
            self.deliver_fn(event.to, self._listener)

    def deliver_fn(self, fn: Callable[..., None], *args: Any) -> None:
        """From the SIP thread: run ``fn(*args)`` on the loop, in order with every other report."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(fn, *args)

    # ---- the thread
    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        self._agent = _Agent(self, self.settings)
        try:
            self._agent.create()
        except Exception as exc:
            detail = exc.info() if isinstance(exc, pj.Error) else str(exc)
            ready.set_exception(SipError(f"cannot start SIP on {self.settings.bind}:{self.settings.port}: {detail}"))
            self._safe_destroy()
            return
        ready.set_result(None)
        error = ""
        try:
            self._serve()
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("SIP thread died: %s", error)
        finally:
            self._safe_destroy()
            self._fail_pending()
        if error:
            self._died.set()  # before the report: the thread may still be finishing when the loop reads it
            self.deliver(BackendDied(error))

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.heartbeat = time.monotonic()
            self._run_commands()
            self._agent.pump()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = command.fn()
            except _InjectedCrashError:
                raise
            except Exception as exc:
                if not command.future.done():
                    command.future.set_exception(exc)
                continue
            if not command.future.done():
                command.future.set_result(result)

    def _safe_destroy(self) -> None:
        try:
            self._agent.destroy()
        except Exception:
            log.exception("pjsua2 did not shut down cleanly")

    def _fail_pending(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if not command.future.done():
                command.future.set_exception(SipError("the SIP stack stopped"))


class _InjectedCrashError(RuntimeError):
    pass
