"""The SIP process: today's pjsua2 agent (``doorphoned.sip.pj``), alone in a process of its own.

Why a process: pjlib aborts the whole process when one of its assertions fails (a full socket table,
a freed rdata), and no Python code can catch that. Here such an abort ends this process only; the
daemon sees the socket close, reports it, and starts a new one (``ProcessBackend``), while its doors,
readers and control socket go on. The child dies with the daemon (``PR_SET_PDEATHSIG``, and the
socket closing) and never outlives it.

Started by the daemon as ``python -m doorphoned.sip.child FD PID``: FD is one end of a socketpair that
carries :mod:`doorphoned.sip.wire` frames, PID the daemon's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from typing import Any

from doorphoned.sip import wire
from doorphoned.sip.backend import (
    CallQuality,
    CallState,
    DtmfMethod,
    IncomingCall,
    Registration,
    SipError,
)

log = logging.getLogger("doorphoned.sip.child")
BEAT_EVERY = 1.0
PR_SET_PDEATHSIG = 1


class _Sender:
    """Frames to the daemon; a log handler and the pjsua2 agent's listener both write here."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, message: object) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.encode(message))


class _Forwarder:
    """The :class:`SipListener` of the agent in this process: every report becomes a frame."""

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender
        self.exiting: asyncio.Task[None] | None = None

    def on_incoming(self, call: IncomingCall) -> None:
        self.sender.send(wire.Incoming(call))

    def on_call_state(self, call_id: int, state: CallState, code: int, reason: str, mono: float) -> None:
        self.sender.send(wire.StateChanged(call_id, state, code, reason, mono))

    def on_dtmf(self, call_id: int, digit: str, method: DtmfMethod, mono: float) -> None:
        self.sender.send(wire.DtmfReceived(call_id, digit, method, mono))

    def on_quality(self, call_id: int, quality: CallQuality) -> None:
        self.sender.send(wire.QualityRead(call_id, quality))

    def on_registration(self, registration: Registration) -> None:
        self.sender.send(wire.RegistrationChanged(registration))

    def on_backend_died(self, error: str) -> None:
        """The pjsua2 thread died: say why, then end this process (the daemon starts a new one)."""
        self.sender.send(wire.BackendDied(error))
        self.exiting = asyncio.get_running_loop().create_task(self._exit())

    async def _exit(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.sender.writer.drain()
        os._exit(1)


class _LogToDaemon(logging.Handler):
    def __init__(self, sender: _Sender) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.sender.send(wire.LogLine(record.name, record.levelno, record.getMessage()))


def _die_with_parent(parent: int) -> None:
    """The kernel sends SIGKILL to this process when the daemon dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the daemon died before prctl
        os._exit(1)


async def _serve(fd: int) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    sender = _Sender(writer)
    start = await wire.read(reader)
    assert isinstance(start, wire.Start)
    logging.getLogger().handlers[:] = [_LogToDaemon(sender)]
    logging.getLogger().setLevel(start.log_level)
    from doorphoned.sip.pj import PjBackend  # pjsua2 loads here, never in the daemon

    backend = PjBackend(start.settings)
    try:
        await backend.start(_Forwarder(sender))
    except SipError as exc:
        sender.send(wire.StartFailed(str(exc)))
        await writer.drain()
        return 2
    sender.send(wire.Started(os.getpid()))
    beat = asyncio.create_task(_beat(backend, sender))
    try:
        await _requests(reader, backend, sender)
    finally:
        beat.cancel()
        await backend.stop()
        sender.send(wire.Reply(0, "stopped"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    return 0


async def _beat(backend: Any, sender: _Sender) -> None:
    while True:
        sender.send(wire.Beat(backend.heartbeat, backend.stats(), backend.registration()))
        await asyncio.sleep(BEAT_EVERY)


async def _requests(reader: asyncio.StreamReader, backend: Any, sender: _Sender) -> None:
    """Run each request as it comes (concurrently: a slow hang-up must not hold a DTMF report)."""
    tasks: set[asyncio.Task[None]] = set()
    while True:
        try:
            message = await wire.read(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the daemon is gone
        if not isinstance(message, wire.Request):
            continue
        if isinstance(message.op, wire.Stop):
            return
        task = asyncio.create_task(_run(message, backend, sender))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _run(request: wire.Request, backend: Any, sender: _Sender) -> None:
    op = request.op
    try:
        value: object = None
        if isinstance(op, wire.Dial):
            value = await backend.call(op.uri, lambda call_id: sender.send(wire.Created(request.id, call_id)),
                                       op.headers)
        elif isinstance(op, wire.Hangup):
            await backend.hangup(op.call_id, op.code)
        elif isinstance(op, wire.QuietFor):
            value = await backend.quiet_for(op.call_id)
        elif isinstance(op, wire.SetAllowed):
            await backend.set_allowed_hosts(op.hosts)
        elif isinstance(op, wire.Crash):
            await backend.crash()
        elif isinstance(op, wire.Abort):
            os.abort()
        sender.send(wire.Reply(request.id, value))
    except Exception as exc:
        sender.send(wire.Reply(request.id, None, str(exc) or type(exc).__name__))


NICE = 5  # when the CPU is short, the kernel serves the daemon (doors, readers) before SIP


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[2]))
    with contextlib.suppress(OSError):
        os.nice(NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in `make run` goes to the daemon, which stops us
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    return asyncio.run(_serve(int(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
