"""Hostile RTSP and a connection flood against the daemon's own stream (the camera process hosts it).

Invariants: the daemon and its camera process live (same pid), nothing opened (hw-sim's relay history
unchanged), nothing changed in the store (door log, grants), the installer's password and the grant's
never in the log, and afterwards a QR code still opens door 1 and a real viewer still plays.
``make fuzz-monitor-unit`` runs 10,000 cases in one daemon; ``make test`` a fast pass.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings

from tests.e2e.test_monitor_fuzz import GRANT_USER, _bytes, messages, send
from tests.e2e.test_monitor_unit import PASSWORD, _camera, start_unit
from tests.fuzz import fuzz_cases
from tests.procs import wait_for
from tests.rtsp import PATH, RawRtsp


def test_hostile_rtsp_and_a_connection_flood_stop_neither_the_daemon_nor_the_doors(daemon_factory, hwsim):
    d, port = start_unit(daemon_factory, DOORPHONED_MONITOR_SETUP_SECONDS="5")
    pid = _camera(d)["process_pid"]
    relays = hwsim.relays()
    door_log = d.door_log()
    assert d.ctl_json("monitor", "status")["viewers"] == []

    @settings(max_examples=fuzz_cases(150), database=None)
    @given(messages)
    def one(payload: bytes) -> None:
        reply = send(port, payload.replace(_bytes(GRANT_USER), b"installer"))
        assert b"m=video" not in reply  # nothing described without a valid digest

    one()
    flood = []
    for i in range(200):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 2:
            sock.sendall(b"DESCRIBE rtsp://127.0.0.1" + PATH.encode() + b" RTSP/1.0\r\nCSeq: 1\r\n")  # never ends
        flood.append(sock)
    try:  # while 200 connections hang on: a QR code opens, a real viewer plays
        assert hwsim.relays() == relays and d.door_log() == door_log
        end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        key = d.ctl_json("tempkey", "create", "--name", "Visitor", "--doors", "1", "--end", end, "--count", "5")
        hwsim.cmd("camera", "qr", key["qr"])
        wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=30, what="relay 1 energised by QR")
        viewer = RawRtsp(port, "installer", PASSWORD)
        assert viewer.play() == 200 and viewer.rtp_packets(5) == 5
        viewer.close()
    finally:
        for sock in flood:
            sock.close()
    assert d.proc is not None and d.proc.poll() is None
    assert _camera(d)["process_pid"] == pid and _camera(d)["monitor"]["state"] == "ok"
    wait_for(lambda: _camera(d)["monitor"]["viewers"] == 0, timeout=30, what="viewers gone")
    log = d.log_text()
    assert PASSWORD not in log and "Traceback" not in log, log[-3000:]
    started = time.monotonic()
    assert d.ctl_json("monitor", "status")["state"] == "ok" and time.monotonic() - started < 30
