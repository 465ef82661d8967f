"""Bursts of INVITEs and a dying SIP process: the daemon (same pid) and its doors go on.

The real daemon on hw-sim, SIP in its child process; bursts sent back to back over UDP from an allowed
(127.0.0.1) and a refused (127.0.0.2) address, with and without SDP; the keypad typed meanwhile.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from tests.latency import KeypadProbe
from tests.procs import wait_for
from tests.sipburst import BurstResult, burst
from tests.sipp import Sipp, sip_env, uac_scenario, wait_sip_up


@pytest.fixture
def unit(daemon_factory, hwsim):
    d = daemon_factory(env=sip_env(DOORPHONED_DOORS_1_MODE="bistable"))
    d.start()
    d.sip_target = f"127.0.0.1:{d.extra_env['DOORPHONED_SIP_PORT']}"
    wait_sip_up(d)
    user = d.ctl_json("user", "add", "Burst tester", "--doors", "1")
    d.ctl("pin", "set", user["id"], input="7351\n")
    return d


def relay_moves(hwsim) -> tuple[int, str]:
    relay = hwsim.relay(1)
    return relay["energise_count"], relay["state"]


def sip_status(d) -> dict:
    return next(f["sip"] for f in d.ctl_json("status")["features"] if "sip" in f)


def burst_while_typing(d, probe: KeypadProbe, size: int, ip: str, sdp: bool) -> tuple[BurstResult, list[float]]:
    out: list[BurstResult] = []
    sender = threading.Thread(target=lambda: out.append(burst(d.sip_target, size, ip, sdp, timeout=60)))
    sender.start()
    latencies = [probe.once()]
    while sender.is_alive():
        latencies.append(probe.once())
    sender.join()
    return out[0], latencies


@pytest.mark.parametrize(("ip", "sdp", "codes"), [
    ("127.0.0.1", True, {200, 486, 503}), ("127.0.0.1", False, {200, 486, 503}),
    ("127.0.0.2", True, {403, 486}), ("127.0.0.2", False, {403, 486})],
    ids=["allowed-sdp", "allowed-no-sdp", "refused-sdp", "refused-no-sdp"])
def test_a_burst_of_200_invites_leaves_the_daemon_its_sip_process_and_the_keypad(unit, hwsim, tmp_path, ip, sdp,
                                                                                  codes):
    d = unit
    pid, sip_pid = d.proc.pid, sip_status(d)["pid"]
    probe = KeypadProbe(hwsim.socket, "7351")
    result, latencies = burst_while_typing(d, probe, 200, ip, sdp)
    probe.close()
    assert result.unanswered == 0, result.summary()  # every INVITE got a final answer
    assert set(result.codes) <= codes, result.summary()
    assert (403 in result.codes) == (ip == "127.0.0.2")
    assert d.proc.poll() is None and d.proc.pid == pid
    sip = sip_status(d)  # status answers
    assert sip["running"] and sip["restarts"] == 0 and sip["pid"] == sip_pid
    assert latencies  # each probe returned only once relay 1 moved: the keypad worked during the burst
    # refusals reach the daemon in batches: once the last batch is in, the daemon's count is the SIP process's
    refusals = lambda s: sum(s["answered"].get(k, 0) for k in ("not_allowed", "busy", "overloaded",  # noqa: E731
                                                               "rate_limited"))
    wait_for(lambda: (s := sip_status(d))["rejected"] == refusals(s) and (ip != "127.0.0.2" or s["rejected"] > 0),
             timeout=10, what="every refused INVITE counted by the daemon")
    assert d.log_text().count("refused call from") < 20  # rate-limited log lines
    # a real caller gets through after the burst and opens door 1 with its code
    before = relay_moves(hwsim)
    call = Sipp(tmp_path, "after", uac_scenario("#", hold_ms=300), d.sip_target, "-m", "1", "-timeout", "20s",
                "-timeout_error").start()
    assert call.wait() == 0
    wait_for(lambda: relay_moves(hwsim) != before, timeout=10, what="door 1 moved by DTMF after the burst")


def test_a_dead_sip_process_is_replaced_and_the_doors_never_notice(unit, hwsim, tmp_path):
    """pjlib aborts on failed assertions: an abort of the SIP process costs a restart, not the daemon."""
    d = unit
    pid, sip_pid = d.proc.pid, sip_status(d)["pid"]
    probe = KeypadProbe(hwsim.socket, "7351")
    os.kill(sip_pid, signal.SIGABRT)
    probe.once()  # the keypad works while SIP restarts
    sip = wait_for(lambda: (s := sip_status(d))["running"] and s["pid"] != sip_pid and s, timeout=30,
                   what="a new SIP process")
    probe.close()
    assert sip["restarts"] == 1 and d.proc.pid == pid and d.proc.poll() is None
    assert "restarting the SIP stack (restart 1" in d.log_text()
    call = Sipp(tmp_path, "after", uac_scenario("#", hold_ms=300), d.sip_target, "-m", "1", "-timeout", "20s",
                "-timeout_error").start()
    assert call.wait() == 0


def test_a_frozen_sip_process_is_killed_and_replaced_and_the_doors_keep_working(unit, hwsim, tmp_path):
    """HUNG_AFTER: a SIP process that stops running (SIGSTOP: its SIP thread and its heartbeats stop, as
    when it is stuck with the GIL held) is killed after 10 s without a word and replaced; the keypad
    opens door 1 meanwhile; status counts the restart; a call gets through to the new process."""
    d = unit
    pid, sip_pid = d.proc.pid, sip_status(d)["pid"]
    os.kill(sip_pid, signal.SIGSTOP)
    try:
        probe = KeypadProbe(hwsim.socket, "7351")
        probe.once()  # the keypad works while the SIP process is frozen
        sip = wait_for(lambda: (s := sip_status(d))["running"] and s["pid"] != sip_pid and s, timeout=60,
                       what="the frozen SIP process replaced")
        probe.once()
        probe.close()
    finally:
        if not gone(sip_pid):
            os.kill(sip_pid, signal.SIGCONT)  # a failed test leaves nothing stopped behind
    assert gone(sip_pid) and sip["restarts"] == 1 and d.proc.pid == pid and d.proc.poll() is None
    assert f"SIP process {sip_pid}: nothing heard from it for 10 s" in d.log_text()
    call = Sipp(tmp_path, "after", uac_scenario("#", hold_ms=300), d.sip_target, "-m", "1", "-timeout", "20s",
                "-timeout_error").start()
    assert call.wait() == 0


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its reaper."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_the_sip_process_ends_with_the_daemon_even_on_kill_9(unit):
    d = unit
    sip_pid = sip_status(d)["pid"]
    d.proc.kill()
    d.proc.wait()
    wait_for(lambda: gone(sip_pid), timeout=10, what="the SIP process to exit after the daemon's kill -9")


def test_stop_ends_the_sip_process_cleanly(unit):
    d = unit
    sip_pid = sip_status(d)["pid"]
    assert d.terminate() == 0
    wait_for(lambda: gone(sip_pid), timeout=10, what="the SIP process gone after stop")
    assert "did not stop" not in d.log_text()


def test_a_taken_sip_port_leaves_the_daemon_ready_and_sip_comes_up_once_it_is_free(daemon_factory, hwsim):
    """pjsua2 starts after READY=1, in its own process: a failed start is retried with a growing delay."""
    env = sip_env()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", int(env["DOORPHONED_SIP_PORT"])))
    d = daemon_factory(env=env)
    d.start()  # READY=1 came
    wait_for(lambda: "cannot start SIP" in d.log_text(), timeout=30, what="the failed SIP start in the log")
    sip = sip_status(d)
    assert not sip["running"] and d.ctl("status").returncode == 0
    squatter.close()
    sip = wait_sip_up(d, timeout=60)
    assert sip["restarts"] >= 1 and d.proc.poll() is None


STRANGERS = 6  # sip.tcp_max_connections's default


def test_500_tcp_connections_held_do_not_stop_a_call_the_keypad_or_the_sip_process(daemon_factory, hwsim, tmp_path):
    """Each connection pjsip accepts holds one of pjlib's 64 socket handles, and pjsip 2.15.1 keeps a silent
    one open for ever: 500 held from 100 addresses must not starve calls of RTP sockets nor abort the SIP
    process. The bounds (sip.tcp_*) keep at most 6 from strangers and 4 per address, close those that
    never got an answer, and an allowed peer still calls over TCP and opens door 1 by DTMF."""
    d = daemon_factory(env=sip_env(DOORPHONED_DOORS_1_MODE="bistable", DOORPHONED_SIP_TCP_IDLE_TIMEOUT="3"))
    d.start()
    d.sip_target = f"127.0.0.1:{d.extra_env['DOORPHONED_SIP_PORT']}"
    wait_sip_up(d)
    user = d.ctl_json("user", "add", "TCP tester", "--doors", "1")
    d.ctl("pin", "set", user["id"], input="7351\n")
    sip_pid = sip_status(d)["pid"]
    port = int(d.extra_env["DOORPHONED_SIP_PORT"])
    held: list[socket.socket] = []
    try:
        for i in range(500):
            client = socket.socket()
            client.bind((f"127.0.1.{i // 5 + 1}", 0))
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            held.append(client)
        wait_for(lambda: sip_status(d)["answered"].get("tcp_refused", 0) > 0, timeout=30,
                 what="connections past the caps shut down")
        probe = KeypadProbe(hwsim.socket, "7351")
        probe.once()  # the keypad works with 500 connections held
        probe.close()
        before = relay_moves(hwsim)
        call = Sipp(tmp_path, "tcp", uac_scenario("#", method="info", hold_ms=300), d.sip_target, "-t", "t1",
                    "-m", "1", "-timeout", "30s", "-timeout_error").start()
        assert call.wait() == 0
        wait_for(lambda: relay_moves(hwsim) != before, timeout=10, what="door 1 opened by a call over TCP")
        assert sip_status(d)["tcp_connections"] <= STRANGERS + 4
        # How many of the flood get past the kernel's accept backlog (pjsip listens with 5) is the machine's
        # timing; each that pjsip accepted and that stays silent is closed after sip.tcp_idle_timeout.
        wait_for(lambda: sip_status(d)["tcp_connections"] == 0, timeout=60,
                 what="the flood's silent connections closed")
        held += silent_connections(d, port, STRANGERS)
    finally:
        for client in held:
            client.close()
    sip = sip_status(d)
    assert sip["pid"] == sip_pid and sip["restarts"] == 0 and sip["running"]  # the SIP process survived
    assert "TCP connection limits reached" in d.log_text()


def silent_connections(d, port: int, count: int) -> list[socket.socket]:
    """``count`` strangers from addresses of their own, each accepted before the next opens, that send nothing:
    every one is closed after sip.tcp_idle_timeout."""
    before = sip_status(d)["answered"].get("tcp_idle_closed", 0)

    def accepted() -> int:
        sip = sip_status(d)
        return sip["tcp_connections"] + sip["answered"].get("tcp_idle_closed", 0) - before

    opened: list[socket.socket] = []
    for i in range(count):
        opened.append(socket.create_connection(("127.0.0.1", port), timeout=10,
                                               source_address=(f"127.0.2.{i + 1}", 0)))
        wait_for(lambda n=i + 1: accepted() >= n, timeout=30, what=f"silent connection {i + 1} accepted")
    wait_for(lambda: sip_status(d)["answered"].get("tcp_idle_closed", 0) - before >= count, timeout=60,
             what=f"{count} silent connections closed after sip.tcp_idle_timeout")
    for sock in opened:  # closed by the unit: each reads EOF
        sock.settimeout(10)
        assert sock.recv(1) == b""
    return opened
