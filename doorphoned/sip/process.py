"""The daemon's side of the SIP process: a :class:`SipBackend` whose stack runs in ``doorphoned.sip.child``.

pjsua2 is never loaded into the daemon. Requests go to the child as frames and are answered by
request id; the child's reports come back in order and are handed to the listener on the loop.
When the child dies (pjlib abort, crash, kill) the socket closes: pending requests fail with
:class:`SipError`, ``alive`` turns false and the listener hears ``on_backend_died`` once; the
feature then starts a new process. A child whose pjsua2 thread stops pumping for ``HUNG_AFTER``
seconds (its heartbeats say so), or that sends nothing at all for as long (frozen, stopped), is killed
(in a process of its own it can be replaced; in the daemon it could not).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from doorphoned.sip import wire
from doorphoned.sip.backend import BackendStats, Registration, SipBackend, SipError, SipListener, SipSettings

log = logging.getLogger(__name__)

START_TIMEOUT = 20.0  # pjsua2 start-up on a loaded machine (about 0.3 s when idle)
STOP_TIMEOUT = 10.0
HUNG_AFTER = 10.0


class ProcessBackend(SipBackend):
    """pjsua2 in a supervised child process (see the module docstring)."""

    def __init__(self, settings: SipSettings, argv: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self._argv = argv or (sys.executable, "-m", "doorphoned.sip.child")
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._listener: SipListener | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._created: dict[int, Callable[[int], None]] = {}
        self._next_id = 1
        self._stats = BackendStats()
        self._registration = Registration(configured=bool(settings.registrar))
        self._dead = False
        self._stopping = False
        self.heartbeat = 0.0
        self.started = False  # the child said Started (pjsua2 is up and listening)
        self.pid: int | None = None

    # ---- life cycle
    async def start(self, listener: SipListener) -> None:
        self._listener = listener
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv, str(theirs.fileno()), str(os.getpid()), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        self.pid = self._proc.pid
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._writer.write(wire.encode(wire.Start(self.settings, logging.getLogger().getEffectiveLevel())))
        # Not awaited here: pjsua2's start-up (~0.3 s idle, over 1 s on a loaded machine) must not hold the
        # daemon's READY=1. Requests sent meanwhile wait in the socket; a failed start is a death.
        self.heartbeat = time.monotonic()
        self._reader_task = asyncio.create_task(self._read(reader), name="sip-process-reader")

    async def _await_start(self, reader: asyncio.StreamReader) -> None:
        while True:
            message = await wire.read(reader)
            if isinstance(message, wire.Started):
                return
            if isinstance(message, wire.StartFailed):
                raise SipError(message.error)
            if isinstance(message, wire.LogLine):
                self._log(message)

    async def stop(self) -> None:
        if self._proc is None or self._stopping:
            return
        self._stopping = True
        if not self._dead and self._writer is not None:
            with contextlib.suppress(ConnectionError):
                self._writer.write(wire.encode(wire.Request(0, wire.Stop())))
                await self._writer.drain()
        try:
            await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("SIP process %d did not stop in %.0f s: killed", self._proc.pid, STOP_TIMEOUT)
        await self._reap()

    async def _reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._fail_pending("the SIP process stopped")

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._dead

    # ---- requests
    async def call(self, uri: str, created: Callable[[int], None], headers: tuple[tuple[str, str], ...] = ()) -> int:
        request = self._next_id
        self._created[request] = created
        try:
            return int(await self._ask(wire.Dial(uri, headers)))
        finally:
            self._created.pop(request, None)

    async def hangup(self, call_id: int, code: int = 0) -> None:
        await self._ask(wire.Hangup(call_id, code))

    async def quiet_for(self, call_id: int) -> float:
        return float(await self._ask(wire.QuietFor(call_id)))

    async def set_allowed_hosts(self, hosts: frozenset[str]) -> None:
        self.settings = dataclasses.replace(self.settings, allowed_hosts=hosts)
        await self._ask(wire.SetAllowed(hosts))

    async def crash(self) -> None:
        """Make the child's pjsua2 thread die (the restart path is tested with this)."""
        await self._ask(wire.Crash())

    def abort(self) -> None:
        """Make the child abort like a failed pjlib assertion (no reply: the process is gone)."""
        self._send(wire.Request(self._take_id(), wire.Abort()))

    def registration(self) -> Registration:
        return self._registration

    def stats(self) -> BackendStats:
        return self._stats

    def _take_id(self) -> int:
        request, self._next_id = self._next_id, self._next_id + 1
        return request

    def _send(self, message: object) -> None:
        if not self.alive or self._writer is None or self._writer.is_closing():
            raise SipError("the SIP stack is not running")
        self._writer.write(wire.encode(message))

    def _ask(self, op: wire.Operation) -> asyncio.Future[Any]:
        request = self._take_id()
        self._send(wire.Request(request, op))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        return future

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SipError(why))
        self._pending.clear()

    # ---- what the child says
    async def _read(self, reader: asyncio.StreamReader) -> None:
        error = ""
        try:
            await asyncio.wait_for(self._await_start(reader), START_TIMEOUT)
            self.started = True
            self.heartbeat = time.monotonic()
            while True:
                try:
                    message = await asyncio.wait_for(wire.read(reader), HUNG_AFTER)
                except TimeoutError:
                    error = self._silent()
                    break
                self._handle(message)
        except SipError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"the SIP process did not start within {START_TIMEOUT:.0f} s"
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # an unreadable frame: treat the child as broken
            error = f"{type(exc).__name__}: {exc}"
        if self._stopping:
            return
        self._dead = True
        self._fail_pending("the SIP process died")
        proc = self._proc
        with contextlib.suppress(ProcessLookupError):
            if proc is not None and proc.returncode is None:
                proc.kill()
        if proc is not None:
            await proc.wait()
        code = proc.returncode if proc is not None else None
        why = error or _exit_text(code)
        if self._listener is not None and not self._stopping:
            self._listener.on_backend_died(why)

    def _handle(self, message: object) -> None:
        if isinstance(message, wire.Reply):
            future = self._pending.pop(message.id, None)
            if future is not None and not future.done():
                if message.error:
                    future.set_exception(SipError(message.error))
                else:
                    future.set_result(message.value)
        elif isinstance(message, wire.Created):
            created = self._created.pop(message.request, None)
            if created is not None:
                created(message.call_id)
        elif isinstance(message, wire.Beat):
            self._stats, self._registration = message.stats, message.registration
            self.heartbeat = message.heartbeat
            self._check_hung()
        elif isinstance(message, wire.LogLine):
            self._log(message)
        elif isinstance(message, wire.BackendDied):
            log.error("SIP process: %s", message.error)
        elif isinstance(message, wire.RegistrationChanged | wire.Incoming | wire.StateChanged |
                        wire.DtmfReceived | wire.QualityRead):
            if isinstance(message, wire.RegistrationChanged):
                self._registration = message.registration
            if self._listener is not None:
                message.to(self._listener)

    def _silent(self) -> str:
        """No frame (not even a heartbeat, sent every second) for ``HUNG_AFTER`` s: the whole child is
        frozen (stopped, swapped out, stuck with the GIL held), so it cannot report its own hung thread."""
        pid = self._proc.pid if self._proc is not None else 0
        log.error("SIP process %d: nothing heard from it for %.0f s (frozen?): killing it", pid, HUNG_AFTER)
        return f"the SIP process sent nothing for {HUNG_AFTER:.0f} s"

    def _check_hung(self) -> None:
        """A pjsua2 thread stuck in pjsip (a blocking DNS look-up): the child is killed and replaced."""
        if self.heartbeat and time.monotonic() - self.heartbeat > HUNG_AFTER and self._proc is not None:
            log.error("SIP process %d: its SIP thread has not run for %.0f s: killing it", self._proc.pid,
                      HUNG_AFTER)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    @staticmethod
    def _log(line: wire.LogLine) -> None:
        logging.getLogger(line.name).log(line.level, "%s", line.message)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"SIP process killed by {signal.Signals(-code).name}"
    return f"SIP process exited with status {code}"
