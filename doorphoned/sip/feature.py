"""The SIP feature: calls as the user sees them, carried out through a :class:`SipBackend`.

Runs on the asyncio loop. The backend (pjsua2 in its own thread) reports calls, states and DTMF;
this module decides what they mean: which legs ring and when (the pure :func:`plan_call`), first
answer wins and every other leg is cancelled, timers for ringing, talking and silence, DTMF codes
that go through the access gate like every other credential, and one call-history row plus a
:class:`CallEnded` event per call. If the SIP thread dies the feature starts a new one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock, Timer, wait_event
from doorphoned.core.events import AlarmChanged, CallEnded, CallRinging, RingCallee
from doorphoned.core.feature import Feature
from doorphoned.core.inputs import InputLine
from doorphoned.core.lockout import LockoutState
from doorphoned.core.ports import Gate, MonitorGrants, Snapshots
from doorphoned.core.presentations import DtmfCode
from doorphoned.core.store import Store
from doorphoned.sip.backend import (
    CallQuality,
    CallState,
    DtmfMethod,
    IncomingCall,
    Registration,
    SipBackend,
    SipError,
    SipSettings,
    literal_hosts,
    resolve_hosts,
    uri_key,
)
from doorphoned.sip.calllog import CallLog, CallRecord, CallType
from doorphoned.sip.config import SipConfig, SipSections
from doorphoned.sip.routing import CallPlan, bare_uri, match_code, plan_call, plan_direct

log = logging.getLogger(__name__)

WATCH_EVERY = 1.0
QUICK_DEATH = 10.0  # a SIP stack that dies sooner after its start is restarted after a growing delay ...
RESTART_MAX = 60.0  # ... of at most this
HUNG_AFTER = 10.0  # a SIP thread that has not pumped for this long is treated as dead
RESOLVE_RETRY = 10.0  # seconds between look-ups while allowed peers' host names do not resolve
RESOLVE_TIMEOUT = 3.0
PRUNE_EVERY = 500
_REFUSALS = {"intercom_off": "intercom permission is off for this target",
             "dnd": "do-not-disturb is on now; logged as missed",
             "no_destination": "the target has no app, monitor or phone for its contact preference"}
_SHED = {"not_allowed": "not an allowed peer", "malformed": "a From/To/Call-ID/CSeq header given twice",
         "busy": "too many calls at once", "overloaded": "too many new calls per second",
         "rate_limited": "this peer holds too many calls"}
REJECT_LOG_EVERY = 5.0
MONITOR_HEADER = "X-Monitor-URL"  # the callee's one-time URL to the live camera (docs/sip.md)
CALL_SETTLE = 2.0  # seconds `call` waits (at most a quarter of the ring timeout) for a leg to ring
GUESSING_CALLS = 3  # calls hung up for too many wrong DTMF keys ...
GUESSING_WINDOW = 600.0  # ... within this many seconds lock the peer's DTMF out ...
GUESSING_LOCKOUT = 900.0  # ... for this long
DTMF_LOCKOUT_SOURCE = "sip-dtmf:"  # lockout sources of DTMF peers, next to the keypad's
RING_CAPTURE_WAIT = 1.0  # seconds the ring event waits for the call's capture (it goes without its id after)
VIDEO_SAMPLE_EVERY = 3  # watch rounds (s) between readings of a ringing/talking call's monitor viewers
VIDEO_READ_TIMEOUT = 2.0  # seconds the call's end waits for its viewers' last figures


class LockoutStore(Protocol):
    """Where lockouts are kept (the credential store's ``lockouts`` table)."""

    def lockouts(self) -> dict[str, LockoutState]: ...
    def save_lockout(self, source: str, state: LockoutState) -> None: ...


@dataclass
class Session:
    """One outgoing call as the user sees it: the plan's waves of legs, and the leg that answered."""

    id: int
    plan: CallPlan
    started: datetime
    wave: int = 0
    legs: dict[int, str] = field(default_factory=dict)  # live call id -> URI
    winner: int | None = None
    winner_wave: int = 0
    done: bool = False
    timer: Timer | None = None
    first_invite_mono: float = 0.0
    last_code: int = 0
    failure: str = ""  # why the session ended without an answer
    grants: list[str] = field(default_factory=list)  # monitor grants handed to its legs, revoked at its end
    grant_uris: dict[str, str] = field(default_factory=dict)  # grant id -> the leg's URI it was handed to
    video: dict[str, dict[str, Any]] = field(default_factory=dict)  # grant id -> its viewer's latest figures
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # named by the ring and the end events
    capture_id: int | None = None
    captured: asyncio.Event = field(default_factory=asyncio.Event)  # the ring capture is done (or failed)
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # a leg rang or answered, or it ended


@dataclass
class ActiveCall:
    """One SIP dialog the unit is part of."""

    call_id: int
    direction: str  # in | out
    peer: str
    started: datetime
    session: Session | None = None
    answered: datetime | None = None
    keys: str = ""
    wrong_keys: int = 0  # keys since the last matching code
    opened: list[int] = field(default_factory=list)
    quality: CallQuality | None = None
    reason: str = ""
    timer: Timer | None = None


def sip_settings(config: SipSections,
                 resolve: Callable[[tuple[str, ...]], frozenset[str]] = resolve_hosts) -> SipSettings:
    """The backend's flat settings: peers resolved to addresses, the registrar's address allowed too."""
    sip = config.sip
    allowed = list(sip.allowed_peers)
    if sip.registrar:
        allowed.append(uri_key(sip.registrar).rpartition("@")[2])
    blocked = frozenset(uri_key(u) for t in sip.targets if not t.intercom for u in t.app)
    return SipSettings(
        bind=sip.bind, port=sip.port, tcp=sip.tcp, tls_port=sip.tls_port, tls_cert=sip.tls_cert,
        tls_key=sip.tls_key, public_address=sip.public_address, rtp_port=sip.rtp_port, null_audio=sip.null_audio,
        tcp_max_connections=sip.tcp_max_connections, tcp_max_per_source=sip.tcp_max_per_source,
        tcp_idle_timeout=sip.tcp_idle_timeout,
        codecs=tuple(sip.codecs), allowed_hosts=resolve(tuple(allowed)), blocked_callers=blocked,
        auto_answer=sip.auto_answer, registrar=sip.registrar, username=sip.username, password=sip.password,
        realm=sip.realm, reg_timeout=sip.reg_timeout)


def _look_up(config: SipSections, names: tuple[str, ...]) -> tuple[frozenset[str], list[str]]:
    """(every allowed address, the host names that did not resolve); blocking: run off the loop."""
    return sip_settings(config).allowed_hosts, [n for n in names if not resolve_hosts((n,))]


def backend_now() -> float:
    """Now on the clock the SIP stack stamps its reports with (its heartbeat, a call's arrival): the
    system's monotonic clock, since the pjsua2 thread and the SIP process have no :class:`Clock`."""
    return time.monotonic()


def default_backend(settings: SipSettings) -> SipBackend:
    """pjsua2 in a process of its own: a pjlib abort must not take the doors (see docs/sip.md)."""
    from doorphoned.sip.process import ProcessBackend

    return ProcessBackend(settings)


class SipFeature(Feature):
    name = "sip"

    def __init__(self, config: SipSections, bus: EventBus, store: Store, gate: Gate, clock: Clock,
                 pin_factory: Callable[[], Any], tz: Callable[[], ZoneInfo],
                 backend_factory: Callable[[SipSettings], SipBackend] = default_backend,
                 lockouts: LockoutStore | None = None,
                 monitor: Callable[[], MonitorGrants | None] | None = None,
                 snapshots: Callable[[], Snapshots | None] | None = None) -> None:
        super().__init__(clock)
        self._monitor = monitor  # one-time monitor URLs for callees (None: the monitor is off)
        self._snapshots = snapshots  # the capture a ringing call takes (None: captures are off)
        self._watch_rounds = 0
        self.config = config
        self._bus = bus
        self.calllog = CallLog(store)
        self._gate = gate
        self._pin_factory = pin_factory
        self._tz = tz
        self._backend_factory = backend_factory
        self._lockouts = lockouts
        self.backend: SipBackend | None = None
        self.calls: dict[int, ActiveCall] = {}
        self.sessions: dict[int, Session] = {}
        self._next_session = 1
        self._buttons: list[InputLine] = []
        self.restarts = 0
        self._allowed: frozenset[str] = frozenset()
        self.hung = False
        self.rejected = 0
        self._rejected_logged = 0
        self._last_reject_log = 0.0
        self.dtmf_seen: deque[dict[str, Any]] = deque(maxlen=50)  # times and methods, never the digits
        self._guessing: dict[str, list[float]] = {}  # peer -> monotonic times of calls ended for guessing
        self._dtmf_locked: dict[str, float] = {}  # peer -> monotonic time its DTMF is heard again
        self.invites_sent: deque[dict[str, Any]] = deque(maxlen=50)
        self.answers: deque[float] = deque(maxlen=50)
        self._stopping = False
        self._restarting = asyncio.Lock()
        self._started_at = 0.0
        self._restart_delay = 0.0
        self._started = False

    @property
    def sip(self) -> SipConfig:
        return self.config.sip

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        if self._started:
            self.restarts += 1  # a reload that changed [sip]: the stack restarts, and status says so
        self._started = True
        self._stopping = False
        await self._start_backend()
        self._open_buttons()
        self.spawn(self._watch(), "watch")
        self.spawn(self._refresh_peers(), "peers")
        self._resume_dtmf_lockouts()
        self.calllog.prune(self.sip.call_log_max)
        log.info("SIP listening on %s:%d (udp%s)%s", self.sip.bind, self.sip.port, "+tcp" if self.sip.tcp else "",
                 f", TLS on {self.sip.tls_port}" if self.sip.tls_port else "")

    def _open_buttons(self) -> None:
        loop = asyncio.get_running_loop()
        for button in self.sip.buttons:
            self._buttons.append(InputLine(button.pin, button.pressed_level, self._pin_factory(), loop,
                                           functools.partial(self._on_button, button.target)))

    def reconfigure(self, config: SipSections) -> None:
        """Settings SIP reads live and that are not in [sip] (DTMF codes, door names): no restart.

        A change to [sip] itself restarts the feature (the daemon decides that).
        """
        self.config = config

    async def rewire_buttons(self) -> None:
        """The doors restarted with a new pin factory: the call buttons move onto it; calls go on."""
        for line in self._buttons:
            line.close()
        self._buttons.clear()
        self._open_buttons()

    async def _start_backend(self) -> None:
        settings = await self._settings()
        backend = self._backend_factory(settings)
        self.backend = backend
        self._started_at = self.clock.monotonic()
        self._allowed = settings.allowed_hosts
        await backend.start(self)

    async def _settings(self) -> SipSettings:
        """Host names among the allowed peers are resolved off the loop; with DNS down (a unit must start
        without network) the unit goes on with the peers given as addresses, and says so."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(sip_settings, self.config), RESOLVE_TIMEOUT)
        except TimeoutError:
            log.warning("SIP: allowed peers' host names did not resolve within %.0f s: only addresses are "
                        "allowed until they do", RESOLVE_TIMEOUT)
            return sip_settings(self.config, resolve=literal_hosts)

    def _peer_names(self) -> tuple[str, ...]:
        """Allowed peers (and the registrar) that are host names, not addresses."""
        names = sip_settings(self.config, resolve=frozenset).allowed_hosts
        return tuple(sorted(names - sip_settings(self.config, resolve=literal_hosts).allowed_hosts))

    async def _refresh_peers(self) -> None:
        """Look the host names up again now and then: addresses change, and a unit that started before
        its network (or its DNS) was up must not refuse its PBX's calls until the next restart."""
        while True:
            names = self._peer_names()
            if not names:
                return
            resolved = await self._resolved(names)
            await self.clock.sleep(self.sip.resolve_every if resolved else RESOLVE_RETRY)

    async def _resolved(self, names: tuple[str, ...]) -> bool:
        """Push the current addresses to the SIP thread; False while a name does not resolve."""
        try:
            hosts, missing = await asyncio.wait_for(asyncio.to_thread(_look_up, self.config, names),
                                                    RESOLVE_TIMEOUT)
        except TimeoutError:
            return False
        backend = self.backend
        if backend is not None and hosts != self._allowed:
            try:
                await backend.set_allowed_hosts(hosts)
                self._allowed = hosts
                log.log(25, "SIP: calls now admitted from %s", ", ".join(sorted(hosts)))
            except SipError as exc:
                log.warning("SIP: allowed peers not updated: %s", exc)
        return not missing

    async def stop_feature(self) -> None:
        self._stopping = True
        for line in self._buttons:
            line.close()
        self._buttons.clear()
        if self.backend is not None:
            await self.backend.stop()
            self.backend = None
        for call_id in list(self.calls):
            self._ended(call_id, "shutdown")
        for session in list(self.sessions.values()):
            self._finish(session, "shutdown")

    async def _watch(self) -> None:
        """Restart a dead SIP thread; end calls that hear nothing (RTP timeout)."""
        while True:
            await self.clock.sleep(WATCH_EVERY)
            backend = self.backend
            if backend is None or not backend.alive:
                await self._restart_backend("the SIP stack is not running", backend)
                continue
            if self._hung(backend):
                continue
            self._watch_rounds += 1
            if self._watch_rounds % VIDEO_SAMPLE_EVERY == 0 and any(x.grants for x in self.sessions.values()):
                self.spawn(self._sample_video(), "video-sample")
            if self.sip.rtp_timeout:
                try:
                    await self._check_rtp(backend)
                except SipError:
                    continue  # the stack went away meanwhile: the next round restarts it

    def _hung(self, backend: SipBackend) -> bool:
        """A thread stuck inside pjsip (a blocking DNS look-up with the network gone) cannot be replaced
        safely (pjsua is one per process and the old thread still holds it): it is reported, loudly."""
        beat = backend.heartbeat  # stamped by the backend on the system's monotonic clock
        hung = bool(beat) and backend_now() - beat > HUNG_AFTER
        if hung and not self.hung:
            log.error("SIP: the SIP thread has not run for %.0f s (hung in pjsip?): calls are not served", HUNG_AFTER)
        elif self.hung and not hung:
            log.warning("SIP: the SIP thread runs again")
        self.hung = hung
        return hung

    async def _check_rtp(self, backend: SipBackend) -> None:
        for call in list(self.calls.values()):
            if call.answered is None or call.reason:
                continue
            if await backend.quiet_for(call.call_id) > self.sip.rtp_timeout:
                log.warning("call %d: no RTP for %.0f s: hanging up", call.call_id, self.sip.rtp_timeout)
                await self._hangup_call(call, "rtp_timeout")

    async def _restart_backend(self, why: str, dead: SipBackend | None) -> None:
        """Replace ``dead`` (once: the thread's report and the watch can both ask for it)."""
        async with self._restarting:
            if self._stopping or self.backend is not dead:
                return
            await self._replace_backend(why)

    async def _replace_backend(self, why: str) -> None:
        self.restarts += 1
        quick = self.clock.monotonic() - self._started_at < QUICK_DEATH
        self._restart_delay = min(max(1.0, 2 * self._restart_delay), RESTART_MAX) if quick else 0.0
        log.error("SIP: %s; restarting the SIP stack (restart %d%s)", why, self.restarts,
                  f", in {self._restart_delay:.0f} s" if self._restart_delay else "")
        if self._restart_delay:  # a stack that dies at once (port taken) is retried with a growing delay
            await self.clock.sleep(self._restart_delay)
            if self._stopping:
                return
        old, self.backend = self.backend, None
        if old is not None:
            await old.stop()
        for call_id in list(self.calls):
            self._ended(call_id, "sip_restart")
        for session in list(self.sessions.values()):
            self._finish(session, "sip_restart")
        try:
            await self._start_backend()
        except SipError as exc:
            log.error("SIP: restart failed: %s (next try in %.0f s)", exc, WATCH_EVERY)
            self.backend = None

    # ------------------------------------------------------------ SipListener (on the loop)
    def on_backend_died(self, error: str) -> None:
        self.spawn(self._restart_backend(f"the SIP stack died ({error})", self.backend), "restart")

    def on_registration(self, registration: Registration) -> None:
        level = logging.INFO if registration.active else logging.WARNING
        log.log(level, "SIP registration: %s %s", registration.code, registration.text)

    def on_incoming(self, call: IncomingCall) -> None:
        if call.refusal == "intercom_off":
            log.warning("SIP: refused call from %s (403): intercom permission is off for this app account",
                        bare_uri(call.peer))
            self.rejected += 1
            return
        if not call.admitted:
            self._log_rejected(call)
            return
        peer = bare_uri(call.peer)
        self.calls[call.call_id] = ActiveCall(call.call_id, "in", peer, self.clock.now())
        if call.answered_mono:
            self.answers.append((call.answered_mono - call.mono) * 1000)
        log.log(25, "SIP: incoming call %d from %s (%s)", call.call_id, peer, call.source)

    def _log_rejected(self, call: IncomingCall) -> None:
        """The answer was sent by the SIP stack; here only a rate-limited log line (a flood must not flood
        the log)."""
        self.rejected += call.count
        now = self.clock.monotonic()
        if now - self._last_reject_log >= REJECT_LOG_EVERY:
            more = self.rejected - self._rejected_logged - 1  # the report logged stands for one
            why = _SHED.get(call.refusal, call.refusal or "refused")
            log.warning("SIP: refused call from %s (%d, %s)%s", call.source, call.code, why,
                        f"; {more} more refused since the last report" if more > 0 else "")
            self._last_reject_log, self._rejected_logged = now, self.rejected

    def on_call_state(self, call_id: int, state: CallState, code: int, reason: str, mono: float) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.session is not None and state in ("ringing", "confirmed"):
            call.session.progress.set()
        if state == "confirmed" and call.answered is None:
            self._answered(call, mono)
        elif state == "disconnected":
            if call.session is not None and call.session.winner is None:
                call.session.last_code = code
            self._ended(call_id, call.reason or ("hangup" if call.answered else f"{code} {reason}".strip()))

    def on_quality(self, call_id: int, quality: CallQuality) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.quality = quality

    def on_dtmf(self, call_id: int, digit: str, method: DtmfMethod, mono: float) -> None:
        call = self.calls.get(call_id)
        if call is None or call.answered is None or call.reason or not self._is_talking_leg(call):
            return  # not (or no longer) a call the unit is talking in: a losing leg, one being hung up
        self.dtmf_seen.append({"call": call_id, "method": method, "mono": mono})
        if self._dtmf_locked.get(call.peer, 0.0) > self.clock.monotonic():
            return
        codes = {d.id: d.dtmf_code for d in self.config.doors if d.dtmf_code}
        door, call.keys = match_code(call.keys + digit, codes)
        if door is None:
            call.wrong_keys += 1
            log.debug("call %d: DTMF key (%s), no code matched yet", call_id, method)  # never the digit
            if call.wrong_keys >= self.sip.dtmf_max_wrong_keys:
                self._guessed(call)
            return
        call.wrong_keys = 0
        self.spawn(self._open(call, door, method), f"dtmf-open-{door}")

    def _is_talking_leg(self, call: ActiveCall) -> bool:
        session = call.session
        return session is None or session.winner == call.call_id

    def _guessed(self, call: ActiveCall) -> None:
        """Too many keys without a code: someone is guessing. Hang up; three such calls lock the peer out."""
        log.warning("call %d from %s: %d DTMF keys without a door code: hanging up", call.call_id, call.peer,
                    call.wrong_keys)
        self.spawn(self._hangup_call(call, "dtmf_guessing"), "dtmf-guessing")
        now = self.clock.monotonic()
        recent = [t for t in self._guessing.get(call.peer, []) if now - t < GUESSING_WINDOW] + [now]
        self._guessing[call.peer] = recent
        if len(recent) >= GUESSING_CALLS and self._dtmf_locked.get(call.peer, 0.0) <= now:
            self._dtmf_locked[call.peer] = now + GUESSING_LOCKOUT
            self._save_lockout(call.peer, GUESSING_LOCKOUT)
            detail = f"{call.peer}: DTMF not heard for {GUESSING_LOCKOUT / 60:.0f} min after repeated guessing"
            log.error("SIP: %s", detail)
            self._bus.publish(AlarmChanged(self.clock.now(), "dtmf_lockout", True, None, detail))
            self.later(GUESSING_LOCKOUT, self._lockout_over, call.peer)

    def _lockout_over(self, peer: str) -> None:
        self._dtmf_locked.pop(peer, None)
        self._save_lockout(peer, 0.0)
        self._bus.publish(AlarmChanged(self.clock.now(), "dtmf_lockout", False, None, f"{peer}: DTMF heard again"))

    def _save_lockout(self, peer: str, seconds: float) -> None:
        """Kept with the keypad's lockouts (epoch times): a restart must not lift a DTMF lock-out."""
        if self._lockouts is None:
            return
        now = self.clock.now().timestamp()
        state = LockoutState((), now + seconds, 1, now) if seconds else LockoutState()
        try:
            self._lockouts.save_lockout(DTMF_LOCKOUT_SOURCE + peer, state)
        except sqlite3.Error as exc:
            log.error("SIP: DTMF lock-out of %s not saved: %s", peer, exc)

    def _resume_dtmf_lockouts(self) -> None:
        """After a restart, a lock-out still running goes on (and still ends with its alarm cleared)."""
        if self._lockouts is None:
            return
        now, mono = self.clock.now().timestamp(), self.clock.monotonic()
        for source, state in self._lockouts.lockouts().items():
            if not source.startswith(DTMF_LOCKOUT_SOURCE) or not state.is_locked(now):
                continue
            peer, left = source.removeprefix(DTMF_LOCKOUT_SOURCE), state.locked_until - now
            self._dtmf_locked[peer] = mono + left
            self.later(left, self._lockout_over, peer)
            log.warning("SIP: DTMF of %s still not heard for %.0f s (lock-out from before the restart)", peer, left)

    async def _open(self, call: ActiveCall, door: int, method: str) -> None:
        call.opened.append(door)  # before the wait: a caller who hangs up at once still has it in the history
        result = await self._gate.request(DtmfCode(call.peer, door), door)
        if not result.opened:
            call.opened.remove(door)
            return
        log.log(25, "call %d: door %d opened by DTMF (%s) from %s", call.call_id, door, method, call.peer)
        if self.sip.hangup_after_open and call.call_id in self.calls:
            await self._hangup_call(call, "opened")

    # ------------------------------------------------------------ answered / ended
    def _answered(self, call: ActiveCall, mono: float) -> None:
        """The call was answered at ``mono`` (the SIP process's monotonic clock, the same as ours): the call
        time and its limit count from then, not from when a loaded loop got to the report."""
        late = min(max(0.0, self.clock.monotonic() - mono), self.sip.max_call_time) if mono > 0 else 0.0
        call.answered = self.clock.now() - timedelta(seconds=late)
        call.timer = self.later(self.sip.max_call_time - late, self._max_time, call.call_id)
        session = call.session
        if session is None:
            return
        if session.winner is not None or session.done or call.call_id not in session.legs or call.reason:
            # a leg already cancelled (ring timeout, answered elsewhere) whose 200 crossed our CANCEL
            self.spawn(self._hangup_call(call, call.reason or "answered_elsewhere"), "late-answer")
            return
        session.winner, session.winner_wave = call.call_id, session.wave
        if session.timer is not None:
            session.timer.cancel()
        log.log(25, "call to %s answered by %s", session.plan.target, call.peer)
        for other in list(session.legs):
            if other != call.call_id:
                self.spawn(self._hangup_leg(other, "answered_elsewhere"), "cancel-leg")

    def _max_time(self, call_id: int) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            log.warning("call %d: max call time (%.0f s) reached", call_id, self.sip.max_call_time)
            self.spawn(self._hangup_call(call, "max_call_time"), "max-time")

    async def _hangup_call(self, call: ActiveCall, reason: str) -> None:
        call.reason = call.reason or reason
        if self.backend is not None:
            await self.backend.hangup(call.call_id)

    async def _hangup_leg(self, call_id: int, reason: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            await self._hangup_call(call, reason)

    def _ended(self, call_id: int, reason: str) -> None:
        call = self.calls.pop(call_id)
        if call.timer is not None:
            call.timer.cancel()
        session = call.session
        if session is None:
            self._record("incoming" if call.answered else "missed", "in", reason, call.peer, "", call.started, call)
            return
        session.legs.pop(call_id, None)
        if session.winner == call_id:
            kind: CallType = "forwarded" if session.winner_wave > 0 else "outgoing"
            self._record(kind, "out", reason, call.peer, session.plan.target, session.started, call, session)
            self._close(session)
        elif session.winner is None and not session.legs and not session.done and session.timer is not None:
            # every leg of this wave failed or declined before the ring timeout: next wave now
            session.timer.cancel()
            self._next_wave(session, f"declined ({session.last_code})" if session.last_code else "failed")

    def _record(self, kind: CallType, direction: str, reason: str, peer: str, target: str, started: datetime,
                call: ActiveCall | None, session: Session | None = None) -> None:
        """One call-history row and its :class:`CallEnded`; a call whose legs had monitor URLs first reads its
        viewers' last figures (then the URLs are revoked), so the row says what video the callee saw."""
        if session is not None and session.grants and not self._stopping:
            grants, session.grants = session.grants, []
            ended = self.clock.now()
            self.spawn(self._record_watched(kind, direction, reason, peer, target, started, call, session, grants,
                                            ended), "record")
            return
        self._write(kind, direction, reason, peer, target, started, call, session, self.clock.now())

    async def _record_watched(self, kind: CallType, direction: str, reason: str, peer: str, target: str,
                              started: datetime, call: ActiveCall | None, session: Session, grants: list[str],
                              ended: datetime) -> None:
        try:
            _note_viewers(session, await self._read_viewers())
        finally:  # cancelled at stop: the row is written all the same, without the last figures
            self._write(kind, direction, reason, peer, target, started, call, session, ended)
            self.spawn(self._revoke_grants(grants), "monitor-revoke")

    def _write(self, kind: CallType, direction: str, reason: str, peer: str, target: str, started: datetime,
               call: ActiveCall | None, session: Session | None, ended: datetime) -> None:
        quality = call.quality.as_dict() if call is not None and call.quality is not None else {}
        video = _call_video(session, call.peer if call is not None else "") if session is not None else None
        record = CallRecord(kind, "in" if direction == "in" else "out", started, ended, reason, peer,
                            target, call.answered if call else None, tuple(call.opened) if call else (), quality,
                            call_id=session.call_id if session is not None else "",
                            capture_id=session.capture_id if session is not None else None, video=video)
        try:
            log_id = self.calllog.append(record)
            if log_id % PRUNE_EVERY == 0:
                self.calllog.prune(self.sip.call_log_max)
        except sqlite3.Error as exc:  # a full disk loses the history row, not the event or the next call
            log.error("call history: cannot write the call with %s: %s", peer or target, exc)
            log_id = 0
        log.log(25, "call %s %s (%s), %s, %.1f s", kind, peer or target, reason, target, record.duration_s)
        self._bus.publish(CallEnded(record.ended, log_id, kind, record.direction, reason, peer, target, started,
                                    record.answered, record.duration_s, record.opened, quality, record.call_id,
                                    record.capture_id, video))

    # ------------------------------------------------------------ outgoing
    def _on_button(self, target: int, pressed: bool) -> None:
        if not pressed:
            return
        if any(s.plan.target == self._target_label(target) for s in self.sessions.values()):
            log.info("call button for target %d: a call is already running", target)
            return
        self.spawn(self.call(str(target), "button"), f"button-{target}")

    def _target_label(self, target: int) -> str:
        found = self.sip.target(target)
        return (found.name or str(found.id)) if found else str(target)

    async def call(self, what: str, source: str = "cli") -> dict[str, Any]:
        """Call a configured target (id or name) or a SIP URI; returns the plan and the session."""
        target = self.sip.target(what)
        if target is not None:
            plan = plan_call(target, self.clock.now(), self._tz())
        elif what.startswith(("sip:", "sips:")):
            plan = plan_direct(what)
        else:
            raise SipError(f"no call target {what!r} (see [[sip.targets]])")
        if plan.refused:
            log.warning("call to %s (%s) not placed: %s (%s)", plan.target, source, _REFUSALS[plan.refused],
                        plan.refused)
            self._record("missed", "out", plan.refused, "", plan.target, self.clock.now(), None)
            return {"target": plan.target, "called": False, "reason": plan.refused}
        log.log(25, "call to %s (%s): %s", plan.target, source, " then ".join("+".join(w) for w in plan.waves))
        session = Session(self._next_session, plan, self.clock.now())
        self._next_session += 1
        self.sessions[session.id] = session
        await self._dial(session)
        legs = sorted(session.legs.values())
        settle = min(CALL_SETTLE, self.sip.ring_timeout / 4)
        await wait_event(self.clock, session.progress, settle)  # a call that fails at once is not "placed"
        if session.done and session.winner is None:
            raise SipError(f"call to {plan.target} failed: {session.failure or 'no leg could be called'}")
        return {"target": plan.target, "called": True, "session": session.id,
                "waves": [list(w) for w in plan.waves], "legs": legs}

    async def _dial(self, session: Session) -> None:
        backend = self.backend
        callees: list[RingCallee] = []
        for uri in session.plan.waves[session.wave]:
            if backend is None:
                break
            headers = await self._monitor_header(session, uri)
            try:
                await backend.call(uri, functools.partial(self._leg_created, session, uri), headers)
            except SipError as exc:
                log.error("call to %s: %s", uri, exc)
                continue
            callees.append(RingCallee(uri, headers[0][1] if headers else None))
            if not session.first_invite_mono:
                session.first_invite_mono = backend_now()  # compared with the SIP stack's stamps
                self.invites_sent.append({"session": session.id, "mono": session.first_invite_mono})
        session.timer = self.later(self.sip.ring_timeout, self._ring_timeout, session)
        if callees:
            self.spawn(self._announce(session, session.wave, tuple(callees)), "ring")
        if not session.legs:  # nobody could be dialled, or every leg refused at once
            session.timer.cancel()
            self._next_wave(session, f"declined ({session.last_code})" if session.last_code else "failed")

    async def _monitor_header(self, session: Session, uri: str) -> tuple[tuple[str, str], ...]:
        """A one-time monitor URL for this leg's callee, as the INVITE's ``X-Monitor-URL``; none when the
        monitor is off or cannot issue one (the call goes out all the same: video is a bonus, the call not)."""
        grants = self._monitor() if self._monitor is not None else None
        if grants is None:
            return ()
        try:
            grant = await grants.issue("call")
        except RuntimeError as exc:
            log.warning("call to %s: no monitor URL (%s)", uri, exc)
            return ()
        session.grants.append(grant.id)
        session.grant_uris[grant.id] = uri
        return ((MONITOR_HEADER, grant.url),)

    async def _announce(self, session: Session, wave: int, callees: tuple[RingCallee, ...]) -> None:
        """The ring event of a wave, after its INVITEs went out (it never delays them). The first wave takes
        the call's capture and waits up to :data:`RING_CAPTURE_WAIT` for its id; a slower capture still
        lands in the call history, the ring goes without it."""
        if wave == 0:
            self.spawn(self._ring_capture(session), "ring-capture")
        await wait_event(self.clock, session.captured, RING_CAPTURE_WAIT)
        if session.done:  # declined or cancelled meanwhile: its end event says so, a ring now would mislead
            return
        self._bus.publish(CallRinging(self.clock.now(), session.call_id, session.plan.target, self.sip.door, wave,
                                      callees, session.capture_id))

    async def _ring_capture(self, session: Session) -> None:
        snapshots = self._snapshots() if self._snapshots is not None else None
        try:
            if snapshots is not None:
                session.capture_id = await snapshots.capture_for("call", self.sip.door)
        finally:
            session.captured.set()

    async def _sample_video(self) -> None:
        """Keep each watched call's viewer figures as they go: a viewer that leaves before the call ends
        still has its last figures in the call history."""
        reply = await self._read_viewers()
        for session in self.sessions.values():
            _note_viewers(session, reply)

    async def _read_viewers(self) -> list[dict[str, Any]]:
        monitor = self._monitor() if self._monitor is not None else None
        if monitor is None:
            return []
        try:
            reply = await asyncio.wait_for(monitor.viewers(), VIDEO_READ_TIMEOUT)
        except (RuntimeError, TimeoutError) as exc:
            log.info("call video: monitor viewers not read (%s)", exc)
            return []
        viewers = reply.get("viewers")
        return [v for v in viewers if isinstance(v, dict)] if isinstance(viewers, list) else []

    async def _revoke_grants(self, grant_ids: list[str]) -> None:
        grants = self._monitor() if self._monitor is not None else None
        for grant_id in grant_ids if grants is not None else []:
            try:
                await grants.revoke(grant_id)  # type: ignore[union-attr]
            except RuntimeError as exc:
                log.warning("call ended: monitor grant %s not revoked (%s)", grant_id, exc)

    def _leg_created(self, session: Session, uri: str, call_id: int) -> None:
        """Registered before any state report of the leg arrives (see :meth:`SipBackend.call`)."""
        call = ActiveCall(call_id, "out", uri, self.clock.now(), session)
        self.calls[call_id] = call
        if session.done:  # hung up (or the stack restarted) while this leg was being dialled
            self.spawn(self._hangup_call(call, "cancelled"), "cancel-leg")
            return
        session.legs[call_id] = uri

    def _ring_timeout(self, session: Session) -> None:
        if session.winner is not None or session.done:
            return
        log.info("call to %s: nobody answered wave %d in %.0f s", session.plan.target, session.wave + 1,
                 self.sip.ring_timeout)
        for call_id in list(session.legs):
            self.spawn(self._hangup_leg(call_id, "ring_timeout"), "cancel-leg")
        self._next_wave(session, "no_answer")

    def _next_wave(self, session: Session, why: str) -> None:
        session.legs.clear()  # the cancelled legs still end on their own; they no longer count
        session.wave += 1
        if session.wave < len(session.plan.waves):
            session.timer = None
            self.spawn(self._dial(session), "next-wave")
            return
        session.failure = why
        self._record("missed", "out", why, "", session.plan.target, session.started, None, session)
        self._close(session)

    def _finish(self, session: Session, why: str) -> None:
        if session.done:
            return
        if session.winner is None:
            self._record("missed", "out", why, "", session.plan.target, session.started, None, session)
        self._close(session)

    def _close(self, session: Session) -> None:
        if session.grants:  # the call ended (answered and hung up, timed out, cancelled): its URLs die
            self.spawn(self._revoke_grants(session.grants), "monitor-revoke")
            session.grants = []
        session.done = True
        session.progress.set()
        if session.timer is not None:
            session.timer.cancel()
        self.sessions.pop(session.id, None)

    async def hangup(self) -> dict[str, Any]:
        """``doorphonectl hangup``: end every call, ringing or answered."""
        ended = len(self.calls)
        for session in list(self.sessions.values()):
            if session.winner is None:
                self._finish(session, "cancelled")
        for call in list(self.calls.values()):
            await self._hangup_call(call, "hangup_command")
        return {"calls_ended": ended}

    # ------------------------------------------------------------ status
    @staticmethod
    def _running(backend: SipBackend | None) -> bool:
        """Alive and listening (a SIP process is alive before pjsua2 is up in it)."""
        return bool(backend and backend.alive and backend.started)

    def status(self) -> dict[str, Any]:
        backend = self.backend
        reg = backend.registration() if backend is not None else Registration(bool(self.sip.registrar))
        return {"sip": {
            "listening": f"{self.sip.bind}:{self.sip.port}", "running": self._running(backend),
            "pid": backend.pid if backend is not None else None,
            "hung": self.hung,
            "tls_port": self.sip.tls_port or None,
            "registration": {"configured": reg.configured, "active": reg.active, "code": reg.code,
                             "text": reg.text, "expires": reg.expires, "registrar": self.sip.registrar},
            "active_calls": [{"call": c.call_id, "direction": c.direction, "peer": c.peer,
                              "answered": c.answered is not None} for c in self.calls.values()],
            "ringing_sessions": len(self.sessions), "rejected": self.rejected, "restarts": self.restarts,
            "answered": backend.stats().extra.get("answered", {}) if backend is not None else {},
            "openssl": backend.stats().extra.get("openssl", "") if backend is not None else "",
            "tcp_connections": backend.stats().extra.get("tcp_connections", 0) if backend is not None else 0,
            "dtmf_seen": list(self.dtmf_seen), "invites_sent": list(self.invites_sent),
            "answer_ms": [round(a, 3) for a in self.answers]}}


def _note_viewers(session: Session, viewers: list[dict[str, Any]]) -> None:
    """Keep the figures of the session's own viewers (by the grant each was admitted with)."""
    for viewer in viewers:
        grant = viewer.get("grant")
        if isinstance(grant, str) and grant in session.grant_uris:
            session.video[grant] = video_figures(viewer)


_VIDEO_LIMITS = {"fps": 1000.0, "bitrate_bps": 1e10, "packet_loss": 1.0, "rtt_ms": 600_000.0}


def video_figures(viewer: dict[str, Any]) -> dict[str, Any]:
    """A viewer entry's quality figures as the call history keeps them: finite numbers in range or null,
    ``rtcp`` a bool, ``transport`` udp/tcp or null. The entry comes from another process: whatever it holds,
    the row and the cloud's JSON stay valid (no NaN, no huge text)."""
    figures: dict[str, Any] = {}
    for key, high in _VIDEO_LIMITS.items():
        value = viewer.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
            figures[key] = None
        else:
            figures[key] = int(value) if key == "bitrate_bps" else round(float(value), 4)
    figures["rtcp"] = viewer.get("rtcp") is True
    figures["transport"] = viewer.get("transport") if viewer.get("transport") in ("udp", "tcp") else None
    return figures


def _call_video(session: Session, answered_by: str) -> dict[str, Any] | None:
    """The call's video quality: the answering leg's viewer when it watched, else the first callee that did;
    None when no callee opened the call's monitor URL."""
    if not session.video:
        return None
    mine = [g for g, uri in session.grant_uris.items() if uri == answered_by and g in session.video]
    return dict(session.video[mine[0] if mine else next(iter(session.video))])
