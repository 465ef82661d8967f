"""The SIP TCP bounds (doorphoned.sip.tcpcap) on real loopback sockets of this process: the scan of
/proc, the BPF gate on a listening socket, idle and over-cap connections shut down."""

from __future__ import annotations

import socket
import time

from doorphoned.sip import tcpcap
from tests.procs import wait_for


def listener() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.setblocking(False)
    return server


def connect(port: int, source: str) -> socket.socket:
    client = socket.socket()
    client.bind((source, 0))
    client.setblocking(False)
    client.connect_ex(("127.0.0.1", port))
    return client


def accept_all(server: socket.socket, into: list[socket.socket]) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return
        into.append(conn)


def test_the_gate_drops_new_connections_from_blocked_sources_and_lets_allowed_ones_through():
    server = listener()
    port = server.getsockname()[1]
    tcpcap._attach(server.fileno(), tcpcap.gate_program(frozenset({"127.0.0.2"}), False, frozenset({"127.0.0.5"})))
    clients = [connect(port, "127.0.0.2"), connect(port, "127.0.0.3")]
    accepted: list[socket.socket] = []
    wait_for(lambda: accept_all(server, accepted) or len(accepted) == 1, timeout=10, what="127.0.0.3 accepted")
    assert accepted[0].getpeername()[0] == "127.0.0.3"
    tcpcap._attach(server.fileno(), tcpcap.gate_program(frozenset(), True, frozenset({"127.0.0.5"})))
    clients += [connect(port, "127.0.0.4"), connect(port, "127.0.0.5")]
    wait_for(lambda: accept_all(server, accepted) or len(accepted) == 2, timeout=10, what="the allowed peer")
    time.sleep(0.5)  # a SYN that got through would have been accepted by now
    accept_all(server, accepted)
    assert [c.getpeername()[0] for c in accepted] == ["127.0.0.3", "127.0.0.5"]
    for sock in clients + accepted + [server]:
        sock.close()


def test_over_cap_and_idle_connections_are_shut_down_and_counted():
    server = listener()
    port = server.getsockname()[1]
    cap = tcpcap.TcpCap(frozenset({port}), total=3, per_source=2, idle_timeout=60.0)
    clients = [connect(port, "127.0.0.2") for _ in range(3)] + [connect(port, f"127.0.0.{i}") for i in (3, 4)]
    accepted: list[socket.socket] = []
    wait_for(lambda: accept_all(server, accepted) or len(accepted) == 5, timeout=10, what="5 connections")
    assert cap.check(now=0.0) == 3  # 127.0.0.2 keeps 2 (per source), 127.0.0.3 the third (total)
    assert cap.counts == {"tcp_refused": 2}
    assert cap.gate[:2] == (frozenset({"127.0.0.2"}), True)
    accepted[0].sendall(b"SIP/2.0 200 OK\r\n\r\n")  # the unit answered on the first connection
    wait_for(lambda: cap.check(now=100.0) == 1, timeout=10, what="the idle connections closed")
    assert cap.counts == {"tcp_refused": 2, "tcp_idle_closed": 2}
    assert cap.gate[:2] == (frozenset(), False)
    for sock in clients + accepted + [server]:
        sock.close()
