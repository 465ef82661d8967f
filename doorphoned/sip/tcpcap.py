"""Bounds on incoming SIP TCP/TLS connections, enforced on the SIP process's own sockets.

Why: every connection pjsip accepts takes one of pjlib's 64 ioqueue handles (``PJ_IOQUEUE_MAX_HANDLES``)
for as long as it is open, and pjsip 2.15.1 keeps a server connection that never sends anything open
for ever (``PJSIP_TCP_INITIAL_TIMEOUT`` and ``PJSIP_TRANSPORT_SERVER_IDLE_TIME_FIRST`` are compile-time 0
in the wheel; only the 90 s keep-alive runs). Held connections leave calls no handle for their RTP
sockets, and when live plus just-closed handles (a closed one comes back only 500 ms later) reach 64,
the next accept fails pjlib's ``!pj_list_empty(&ioqueue->free_list)`` assertion: abort. pjsua2 sets none
of the listener's limits (``pjsip_tcp_transport_cfg`` has no connection cap), so the SIP process watches
its own file descriptors instead (pure file-descriptor work, never pjsip's memory):

- it lists its TCP sockets connected to the SIP (or TLS) port (``/proc/self/fd``, then each socket asked
  through a duplicate of its descriptor);
- a connection on which the unit has sent nothing within ``idle_timeout`` s of its opening (no request was
  ever answered: TCP_INFO's ``bytes_acked`` is 0) is ``shutdown()``: pjsip reads EOF and frees it as it
  frees any closed connection;
- past ``per_source`` connections from one address, or ``total`` in all, the newest are shut down;
- this runs every 0.25 s and, through pjsua2's ``onTransportState``, as each connection is accepted (pjsip
  reports it before accepting the next), so a flood cannot take the handles between two rounds;
- and the listening socket gets a classic BPF filter that drops new connection attempts from addresses at
  their cap (all of them while the total is reached), so pjsip accepts (and spends handles on) no more
  than the caps while they hold; the kernel lets those clients retry their SYN later.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info (Linux >= 4.1)
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8  # tcpi_state (include/net/tcp_states.h)
SKF_NET_OFF = -0x100000


@dataclass(frozen=True)
class Conn:
    """One incoming connection: its socket's inode, our fd for it, the peer's address."""

    inode: int
    fd: int
    host: str
    port: int


def _sockets() -> dict[int, int]:
    """inode -> fd for every socket this process holds."""
    found: dict[int, int] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:["):
                found[int(target[8:-1])] = int(name)
    return found


def _plain(host: str) -> str:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _inspect(fd: int, ports: frozenset[int]) -> tuple[str, str, int] | None:
    """("listen", "", 0) or ("conn", peer host, peer port) for a TCP socket of ours on ``ports``; else None.
    Asked of the socket itself through a duplicate of ``fd`` (``/proc/net/tcp`` walks the kernel's whole
    connection table: ~100 ms per read on this 24 GiB machine, far too slow for 4 rounds a second)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    with sock:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            if sock.getsockname()[1] not in ports:
                return None
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return "listen", "", 0
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
                return None  # shut down already (by us or the peer): pjsip is closing it
            host, port = sock.getpeername()[:2]
        except OSError:
            return None  # not connected (any more)
    return "conn", _plain(host), port


def scan(ports: frozenset[int]) -> tuple[list[Conn], list[int]]:
    """(incoming connections to ``ports``, our listening sockets' fds on them)."""
    conns: list[Conn] = []
    listeners: list[int] = []
    for inode, fd in _sockets().items():
        found = _inspect(fd, ports)
        if found is None:
            continue
        if found[0] == "listen":
            listeners.append(fd)
        else:
            conns.append(Conn(inode, fd, found[1], found[2]))
    return conns, listeners


def _same_socket(sock: socket.socket, inode: int) -> bool:
    return os.fstat(sock.fileno()).st_ino == inode


def _answered(conn: Conn) -> bool | None:
    """Whether the unit has sent anything on ``conn`` (None: the socket is gone)."""
    try:
        with socket.fromfd(conn.fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            if not _same_socket(sock, conn.inode):
                return None
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < TCP_INFO_BYTES_ACKED + 8:
        return True  # an old kernel: idle connections cannot be told apart
    return bool(struct.unpack_from("=Q", info, TCP_INFO_BYTES_ACKED)[0])


def _shut(conn: Conn) -> bool:
    """Shut ``conn`` down through a duplicate of our fd (pjsip keeps and later closes its own fd)."""
    try:
        with socket.fromfd(conn.fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            if not _same_socket(sock, conn.inode):
                return False
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True


def gate_program(blocked: frozenset[str], everything: bool, allowed: frozenset[str] = frozenset()) -> bytes:
    """A classic BPF program for a listening socket: packets from ``allowed`` IPv4 addresses pass, those
    from ``blocked`` ones are dropped, and so is everything else when ``everything``."""
    drop, keep = (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)
    passing = sorted(int(ipaddress.IPv4Address(h)) for h in allowed if _is_v4(h))[:50]
    dropped = [] if everything else sorted(int(ipaddress.IPv4Address(h)) for h in blocked - allowed if _is_v4(h))
    dropped = dropped[:150]
    code = [(0x20, 0, 0, (SKF_NET_OFF + 12) & 0xFFFFFFFF)]  # ld [net + 12]: the IPv4 source address
    tests = len(passing) + len(dropped)
    for i, host in enumerate(passing):  # jeq host -> keep (the instruction after the tests and the default)
        code.append((0x15, tests - i, 0, host))
    for i, host in enumerate(dropped):  # jeq host -> drop (the instruction after keep)
        code.append((0x15, tests - len(passing) - i + 1, 0, host))
    code += [drop if everything else keep, keep, drop]
    return b"".join(struct.pack("HBBI", *insn) for insn in code)


def _is_v4(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).version == 4
    return False


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _attach(fd: int, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def _detach(fd: int) -> None:
    with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock, contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)


@dataclass
class TcpCap:
    """Applies the bounds once per :meth:`check` (called every fraction of a second)."""

    ports: frozenset[int]
    total: int
    per_source: int
    idle_timeout: float
    allowed: frozenset[str] = frozenset()  # allowed peers: not counted in ``total``, never gated by it
    first_seen: dict[int, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    gate: tuple[frozenset[str], bool, frozenset[str]] = (frozenset(), False, frozenset())
    answered: set[int] = field(default_factory=set)  # inodes on which the unit has answered something
    last_warning: float = -60.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, now: float | None = None) -> int:
        """One round; the number of connections open after it. Runs on the SIP process's loop (timed
        rounds, for idle connections) and on the pjsua2 thread (each accepted connection)."""
        with self.lock:
            return self._round(time.monotonic() if now is None else now)

    def _round(self, now: float) -> int:
        conns, listeners = scan(self.ports)
        self.first_seen = {c.inode: self.first_seen.get(c.inode, now) for c in conns}
        self.answered &= set(self.first_seen)
        idle = {c for c in conns if self._idle(c, now)}
        keep = self._keep([c for c in conns if c not in idle])
        kept = set(keep)
        for conn in conns:
            if conn not in kept and _shut(conn):
                key = "tcp_idle_closed" if conn in idle else "tcp_refused"
                self.counts[key] = self.counts.get(key, 0) + 1
        self._set_gate(keep, listeners, now)
        return len(keep)

    def _idle(self, conn: Conn, now: float) -> bool:
        """Open for ``idle_timeout`` s and nothing answered on it yet (never sent a complete request)."""
        if conn.inode in self.answered or now - self.first_seen[conn.inode] < self.idle_timeout:
            return False
        if _answered(conn) is False:
            return True
        self.answered.add(conn.inode)
        return False

    def _keep(self, conns: list[Conn]) -> list[Conn]:
        """The oldest ``per_source`` of each address; of other addresses than allowed peers, the oldest
        ``total`` of those."""
        kept: list[Conn] = []
        by_host: dict[str, int] = {}
        others = 0
        for conn in sorted(conns, key=lambda c: (self.first_seen[c.inode], c.inode)):
            counted = conn.host not in self.allowed
            if by_host.get(conn.host, 0) < self.per_source and not (counted and others >= self.total):
                by_host[conn.host] = by_host.get(conn.host, 0) + 1
                others += counted
                kept.append(conn)
        return kept

    def _set_gate(self, kept: list[Conn], listeners: list[int], now: float) -> None:
        by_host: dict[str, int] = {}
        for conn in kept:
            by_host[conn.host] = by_host.get(conn.host, 0) + 1
        blocked = frozenset(h for h, n in by_host.items() if n >= self.per_source)
        full = sum(c.host not in self.allowed for c in kept) >= self.total
        gate = (blocked, full, self.allowed)
        if (gate[:2] == (frozenset(), False) and self.gate[:2] == gate[:2]) or gate == self.gate:
            return
        self.gate = gate
        for fd in listeners:
            try:
                if blocked or full:
                    _attach(fd, gate_program(blocked, full, self.allowed))
                else:
                    _detach(fd)
            except OSError as exc:
                log.warning("SIP: cannot filter new TCP connections (%s)", exc)
        if (blocked or full) and now - self.last_warning >= 5.0:
            self.last_warning = now
            log.warning("SIP: TCP connection limits reached (%d open, %d addresses at their cap): new "
                        "connections wait until some close", len(kept), len(blocked))
