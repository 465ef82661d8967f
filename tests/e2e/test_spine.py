"""End to end: hw-sim and doorphoned as real processes, driven only through `doorphonectl` and `hwsim`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from doorphoned.core.config import embedded_default_text
from tests.bridge import LockBridge
from tests.procs import ROOT, wait_for
from tests.sipp import wait_sip_up


def pulses(hwsim, relay: int) -> list[dict]:
    return hwsim.relay(relay)["pulses"]


def _holds(duration_ms: float, hold_ms: float) -> bool:
    """A pulse lasts its hold time: never shorter (hw-sim times it from the coil's own messages), and late only
    by what a loaded loop adds to the release (precision is measured in bench/relay_latency.py, not here)."""
    return hold_ms - 50 <= duration_ms <= hold_ms + 500


def test_relay_pulse_length_matches_hold_time(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_DOORS_1_HOLD_TIME": "1.5"})
    d.start()
    for n in range(1, 4):
        d.ctl("relay", "open", "1")  # a hw-sim CLI call may outlast the pulse on a loaded machine: read the record
        wait_for(lambda: (r := hwsim.relay(1))["energise_count"] == n and not r["energised"], timeout=30,  # noqa: B023
                 what=f"pulse {n} of relay 1 finished")
    durations = [p["duration_ms"] for p in pulses(hwsim, 1)]
    assert len(durations) == 3
    for duration in durations:
        assert _holds(duration, 1500), durations
    assert pulses(hwsim, 2) == []


def test_exit_button_opens_its_own_door_only(daemon, hwsim):
    hwsim.cmd("button", "exit", "2")
    wait_for(lambda: hwsim.relay(2)["energise_count"] == 1, what="relay 2 energised")
    time.sleep(0.3)
    assert hwsim.relay(1)["energise_count"] == 0
    [entry] = daemon.door_log(kind="access")
    assert (entry["door"], entry["credential"], entry["granted"], entry["reason"]) == (2, "exit_button", True,
                                                                                      "granted")


def test_forced_and_held_open_alarms_are_logged(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_DOORS_1_HELD_OPEN_ALARM": "1", "DOORPHONED_DOORS_2_HELD_OPEN_ALARM": "0"})
    d.start()
    hwsim.cmd("door", "open", "1")  # nobody was granted: forced open
    d.ctl("relay", "open", "2")
    hwsim.cmd("door", "open", "2")  # granted: not forced
    wait_for(lambda: any(e["reason"] == "held_open" for e in d.door_log(kind="alarm")), timeout=30,
             what="door 1 held open (1 s)")
    wait_for(lambda: (2, "open") in {(e["door"], e["reason"]) for e in d.door_log(kind="door_status")}, timeout=30,
             what="door 2 seen open")  # and its own held-open alarm is off: none may come for it
    hwsim.cmd("door", "close", "1")
    hwsim.cmd("door", "close", "2")
    wait_for(lambda: len(d.door_log(kind="alarm")) >= 4, what="alarm entries")
    alarms = [(e["door"], e["reason"], e["detail"]["active"]) for e in reversed(d.door_log(kind="alarm"))]
    assert alarms == [(1, "forced_open", True), (1, "held_open", True), (1, "forced_open", False),
                      (1, "held_open", False)] or alarms == [(1, "forced_open", True), (1, "held_open", True),
                                                             (1, "held_open", False), (1, "forced_open", False)]
    statuses = [(e["door"], e["reason"]) for e in reversed(d.door_log(kind="door_status"))]
    assert (1, "open") in statuses and (1, "closed") in statuses and (2, "open") in statuses
    state = {door["door"]: door for door in d.ctl_json("relay", "list")}
    assert state[1]["alarms"] == [] and state[1]["door_status"] == "closed"


def test_tamper_alarm(daemon, hwsim):
    hwsim.cmd("tamper", "on")
    wait_for(lambda: daemon.ctl_json("status")["tamper"] == "tampered", what="tamper seen")
    hwsim.cmd("tamper", "off")
    wait_for(lambda: len(daemon.door_log(kind="alarm")) == 2, what="tamper cleared")
    assert [(e["door"], e["reason"], e["detail"]["active"]) for e in reversed(daemon.door_log(kind="alarm"))] == [
        (None, "tamper", True), (None, "tamper", False)]


def test_kill_9_releases_relays_and_keeps_every_log_entry(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_DOORS_1_HOLD_TIME": "10"})
    d.start()
    hwsim.cmd("button", "exit", "2")
    wait_for(lambda: len(d.door_log(kind="access")) == 1, what="exit logged")
    d.ctl("relay", "open", "1")
    assert hwsim.relay(1)["energised"]
    before = d.door_log()
    d.kill()
    wait_for(lambda: not hwsim.relay(1)["energised"], timeout=30, what="relay released after kill -9")
    assert not hwsim.relay(1)["driven"]
    d.start()
    after = d.door_log()
    after_ids = {e["id"] for e in after}
    assert {e["id"] for e in before} <= after_ids
    kept = {e["id"]: e for e in after}
    for entry in before:
        assert kept[entry["id"]] == entry
    assert not hwsim.relay(1)["energised"]  # safe state after restart too


def test_sigterm_stops_cleanly_in_the_safe_state(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_DOORS_2_HOLD_TIME": "10"})
    d.start()
    d.ctl("relay", "open", "2")
    assert hwsim.relay(2)["energised"]
    assert d.terminate() == 0
    d.wait_message("STOPPING=1", timeout=2)
    assert not hwsim.relay(2)["energised"]
    assert not d.socket.exists()


def test_broken_config_refuses_to_start_naming_key_and_line(tmp_path, hwsim):
    bad = tmp_path / "bad.toml"
    text = embedded_default_text().replace('open_level = "high"', 'open_level = "sideways"', 1)
    bad.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "sideways" in t)
    result = subprocess.run([str(ROOT / ".venv/bin/doorphoned"), "--config", str(bad)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 78
    assert f"doors[0].sensor.open_level (line {line})" in result.stderr
    assert "must be one of 'high', 'low'" in result.stderr
    check = subprocess.run([str(ROOT / ".venv/bin/doorphoned"), "--sim", "--check-config"], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0 and "configuration OK" in check.stdout
    ctl = subprocess.run([str(ROOT / ".venv/bin/doorphonectl"), "config", "validate", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert ctl.returncode == 1 and f"(line {line})" in ctl.stderr and len(ctl.stderr.strip().splitlines()) == 1


def test_env_override_error_refuses_to_start(daemon_factory):
    d = daemon_factory(env={"DOORPHONED_DOORS_1_HOLD_TIME": "99"})
    d.start(wait_ready=False)
    assert d.proc.wait(30) == 78
    assert "doors[0].hold_time (environment DOORPHONED_DOORS_1_HOLD_TIME): must be between 1 and 10" in d.log_text()


def _nobody_ctl(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real doorphonectl code as `nobody` (a copy of the package: the checkout may sit under /root)."""
    copy = Path(tempfile.mkdtemp(prefix="ctl-nobody-"))
    shutil.copytree(ROOT / "doorphoned", copy / "doorphoned", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return subprocess.run([runuser, "-u", "nobody", "--", "/usr/bin/python3", "-m", "doorphoned.ctl",
                               "--socket", str(socket_path), *args], capture_output=True, text=True, timeout=30,
                              cwd=copy, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)})
    finally:
        shutil.rmtree(copy)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another uid")
def test_unauthorised_uid_is_refused(daemon_factory, hwsim):
    run_dir = Path(tempfile.mkdtemp(prefix="doorphoned-ctl-"))
    run_dir.chmod(0o755)
    sock = run_dir / "control.sock"
    d = daemon_factory(env={"DOORPHONED_CONTROL_SOCKET": str(sock)})
    d.socket = sock
    d.start()
    try:
        assert sock.stat().st_mode & 0o777 == 0o660
        denied = _nobody_ctl(sock, "status")
        assert denied.returncode == 1
        assert "permission denied" in denied.stderr and "group 'doorphoned'" in denied.stderr
        # Even with the file opened up, SO_PEERCRED refuses the uid.
        sock.chmod(0o666)
        refused = _nobody_ctl(sock, "relay", "open", "1")
        assert refused.returncode == 1
        assert "refused: uid 65534 is neither root nor a member of group 'doorphoned'" in refused.stderr
        assert hwsim.relay(1)["energise_count"] == 0
        assert d.ctl_json("status")["pid"] == d.proc.pid  # root still gets in
    finally:
        d.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


def _http_config(tmp_path: Path, hwsim, url: str, timeout: float) -> Path:
    # state under the daemon fixture's home ("d"), where tests.procs.Daemon looks for the socket
    text = embedded_default_text().replace('state_dir = "var"', f'state_dir = "{tmp_path / "d" / "var"}"')
    text = text.replace('hwsim_socket = "var/hwsim.sock"', f'hwsim_socket = "{hwsim.socket}"')
    text = text.replace('port = "var/keypad.tty"', f'port = "{hwsim.keypad_link}"')
    text = text.replace('device = "udp:127.0.0.1:54321"', f'device = "{hwsim.info["nfc"]["device"]}"')
    text = text.replace('source = "http://127.0.0.1:8090/camera.mjpg"', f'source = "{hwsim.info["camera"]["url"]}"')
    text += f"""
[[doors]]
id = 3
name = "Salto gate"
lock = "http"
hold_time = 2

[doors.http]
url = "{url}"
headers = {{ Authorization = "Bearer bridge-s3cret" }}
timeout = {timeout}
"""
    path = tmp_path / "doorphoned.toml"
    path.write_text(text)
    return path


def test_http_lock_bridge_timeout_is_a_logged_denied_open_not_a_hang(tmp_path, daemon_factory, hwsim):
    with LockBridge() as bridge:
        bridge.delay = 30  # far beyond the 1 s timeout: an open that waited for it cannot pass for one that did not
        d = daemon_factory(config=_http_config(tmp_path, hwsim, f"{bridge.url}/open?key=k3y", 1.0))
        d.start()
        started = time.monotonic()
        result = d.ctl("relay", "open", "3", check=False)
        elapsed = time.monotonic() - started
        assert result.returncode == 1
        assert "door 3: not opened" in result.stderr and "did not answer within 1 s" in result.stderr
        assert elapsed < 15  # the CLI's own start-up is most of it on a loaded machine
        assert len(bridge.requests) == 1 and bridge.requests[0]["headers"]["Authorization"] == "Bearer bridge-s3cret"
        [fault] = d.door_log(kind="lock_fault")
        assert (fault["door"], fault["granted"], fault["reason"]) == (3, False, "lock_bridge_timeout")
        assert "lock bridge" in d.log_text() and "did not answer" in d.log_text()
        assert "bridge-s3cret" not in d.log_text() and "k3y" not in d.log_text()
        d.ctl("relay", "open", "1")  # the loop was never blocked
        assert hwsim.relay(1)["energise_count"] == 1
        bridge.delay = 0
        d.ctl("relay", "open", "3")
        assert len(bridge.requests) == 2
        shown = d.ctl("config", "show").stdout
        assert "bridge-s3cret" not in shown and "k3y" not in shown and "***" in shown


def test_sighup_reloads_and_keeps_running_config_when_new_one_is_bad(tmp_path, daemon_factory, hwsim):
    config = _http_config(tmp_path, hwsim, "http://127.0.0.1:9/open", 1.0)
    d = daemon_factory(config=config)
    d.start()
    config.write_text(config.read_text().replace("hold_time = 5.0", "hold_time = 2.0"))
    d.signal(signal.SIGHUP)
    d.wait_message("RELOADING=1")
    d.wait_message("READY=1")
    assert {x["door"]: x["hold_time"] for x in d.ctl_json("relay", "list")}[2] == 2.0
    d.ctl("relay", "open", "2")
    wait_for(lambda: (r := hwsim.relay(2))["energise_count"] == 1 and not r["energised"], timeout=30,
             what="2 s pulse over")
    assert _holds(hwsim.relay(2)["pulses"][-1]["duration_ms"], 2000), hwsim.relay(2)["pulses"]
    config.write_text(config.read_text().replace("hold_time = 2.0", "hold_time = 200"))
    d.signal(signal.SIGHUP)
    d.wait_message("RELOADING=1")
    d.wait_message("READY=1")
    assert "reload refused" in d.log_text() and "hold_time" in d.log_text()
    assert {x["door"]: x["hold_time"] for x in d.ctl_json("relay", "list")}[2] == 2.0


def test_relay_test_pulses_each_lock_and_reads_inputs(daemon, hwsim):
    hwsim.cmd("door", "open", "2")
    results = daemon.ctl_json("relay", "test", "--pulse-ms", "300")
    doors = {r["door"]: r for r in results if "door" in r}
    assert doors[1]["pulse"] == "ok" and doors[2]["pulse"] == "ok"
    assert doors[1]["sensor"] == "closed" and doors[2]["sensor"] == "open"
    assert all(r["locked_again"] for r in doors.values())
    assert results[-1] == {"tamper": "ok"}
    first, second = hwsim.relay(1)["pulses"][0], hwsim.relay(2)["pulses"][0]
    assert first["end"] <= second["start"]  # in turn, not together
    assert _holds(first["duration_ms"], 300), first


def test_doctor_passes_then_fails_when_hardware_is_gone(daemon, hwsim):
    wait_for(lambda: all(f.get("reader", "ok") == "ok" for f in daemon.ctl_json("status")["features"]),
             timeout=15, what="every reader up")
    wait_sip_up(daemon)  # doctor checks SIP too, whose process starts after READY
    report = daemon.ctl_json("doctor")
    assert {r["state"] for r in report} == {"ok"}, report
    assert daemon.ctl("doctor").returncode == 0
    hwsim.stop()
    time.sleep(0.3)
    result = daemon.ctl("doctor", check=False)
    assert result.returncode == 2
    assert "FAIL  door 1 lock" in result.stdout
    assert "FAIL  reader keypad" in wait_for(lambda: (r := daemon.ctl("doctor", check=False).stdout)
                                             and "FAIL  reader keypad" in r and r, what="keypad fault seen")


def test_log_level_status_and_json_everywhere(daemon):
    assert daemon.ctl_json("log", "level") == {"level": 3, "name": "warning"}
    daemon.ctl("log", "level", "6")
    assert daemon.ctl_json("log", "level")["level"] == 6
    assert daemon.ctl_json("status")["log_level"] == 6
    bad = daemon.ctl("log", "level", "9", check=False)
    assert bad.returncode != 0
    status = daemon.ctl_json("status")
    assert {f["name"]: f["state"] for f in status["features"]} == dict.fromkeys(
        ["door_log", "doors", "access", "keypad", "nfc", "qr", "camera", "packages", "sip", "control"], "running")
    assert [x["door"] for x in status["doors"]] == [1, 2]
    assert daemon.ctl_json("config", "show")["config"]["gpio"]["pin_factory"] == "hwsim"
    missing = daemon.ctl("relay", "open", "9", check=False)
    assert missing.returncode == 1 and "refused (unknown_door)" in missing.stderr


def test_malformed_control_requests_get_errors_and_change_nothing(daemon, hwsim):
    def raw(payload: bytes) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(daemon.socket))
            s.sendall(payload)
            return json.loads(s.makefile("rb").readline())

    assert "malformed JSON" in raw(b"{nope\n")["error"]
    assert "unknown command" in raw(b'{"cmd": "relay.explode"}\n')["error"]
    assert "args must be an object" in raw(b'{"cmd": "relay.open", "args": [1]}\n')["error"]
    assert "door must be a whole number" in raw(b'{"cmd": "relay.open", "args": {"door": "1; rm"}}\n')["error"]
    assert "door must be a whole number" in raw(b'{"cmd": "relay.open", "args": {"door": true}}\n')["error"]
    assert "larger than" in raw(b'{"cmd": "status", "pad": "' + b"x" * 100_000 + b'"}\n')["error"]
    assert hwsim.relay(1)["energise_count"] == 0 and hwsim.relay(2)["energise_count"] == 0
    assert daemon.ctl_json("status")["pid"] == daemon.proc.pid


def test_daemon_waits_for_hwsim_and_recovers(daemon_factory, hwsim):
    """A missing board degrades the doors feature (status shows it), which comes back by itself."""
    hwsim.stop()
    d = daemon_factory()
    d.start()
    status = d.ctl_json("status")
    doors = next(f for f in status["features"] if f["name"] == "doors")
    assert doors["state"] == "retrying" and "not reachable" in doors["error"]
    hwsim.start()
    wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "doors")["state"] == "running",
             timeout=60, what="doors feature recovered")
    d.ctl("relay", "open", "1")
    assert hwsim.relay(1)["energise_count"] == 1


def test_watchdog_is_petted_from_the_loop(daemon_factory):
    d = daemon_factory(env={"WATCHDOG_USEC": "400000"})
    d.start()
    started = time.monotonic()
    count = 0
    while count < 3:
        d.wait_message("WATCHDOG=1", timeout=2)
        count += 1
    assert time.monotonic() - started < 2  # every 0.2 s (half the interval), not once
    assert any(m.startswith("READY=1") and "STATUS=2 doors; all features running" in m for m in d.messages)


def test_second_daemon_on_the_same_state_dir_is_refused(daemon, daemon_factory):
    twin = daemon_factory(name="twin")
    twin.state_dir = daemon.state_dir
    twin.extra_env["DOORPHONED_DAEMON_STATE_DIR"] = str(daemon.state_dir)
    result = subprocess.run(twin.argv(), env=twin.env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"another doorphoned (pid {daemon.proc.pid}) is running with state dir" in result.stderr
    assert daemon.ctl_json("status")["pid"] == daemon.proc.pid


def test_make_run_script_and_clis_without_flags(tmp_path):
    """scripts/run-sim.sh (what `make run` starts) in a scratch project root: both CLIs find it with no flags."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run-sim.sh", tmp_path / "scripts" / "run-sim.sh")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORPHONED_", "HWSIM_", "DOORPHONECTL_"))}
    proc = subprocess.Popen(["bash", "-c", "umask 022; exec bash scripts/run-sim.sh"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        ctl = [str(ROOT / ".venv" / "bin" / "doorphonectl")]
        wait_for(lambda: subprocess.run([*ctl, "status"], cwd=tmp_path, env=env, capture_output=True).returncode == 0,
                 timeout=60, what="make run instance answering")
        subprocess.run([*ctl, "relay", "open", "1"], cwd=tmp_path, env=env, check=True, capture_output=True)
        relays = json.loads(subprocess.run([str(ROOT / ".venv" / "bin" / "hwsim"), "relays", "--json"], cwd=tmp_path,
                                           env=env, check=True, capture_output=True, text=True).stdout)
        assert relays[0]["energise_count"] == 1 and relays[0]["relay"] == 1
        assert (tmp_path / "var" / "doorphoned.db").exists()
        # Under a login umask, state is still owner-only (the socket's group may enter var/, nobody else).
        assert stat.S_IMODE((tmp_path / "var").stat().st_mode) in (0o700, 0o750)
        for name in ("doorphoned.db", "doorphoned.db-wal", "log/doorphoned.log"):
            assert stat.S_IMODE((tmp_path / "var" / name).stat().st_mode) == 0o600, name
        second = subprocess.run(["bash", "scripts/run-sim.sh"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1 and "another doorphoned" in second.stderr, second.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert not (tmp_path / "var" / "control.sock").exists()
    assert not (tmp_path / "var" / "hwsim.sock").exists()
    refused = subprocess.run(["bash", "scripts/run-sim.sh"], cwd=tmp_path,
                             env={**env, "DOORPHONED_SITE_NO_SUCH_KEY": "1"}, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert "unknown configuration key" in refused.stderr
    assert not (tmp_path / "var" / "hwsim.sock").exists()  # hw-sim stopped with it


def test_sighup_adds_and_removes_readers(tmp_path, daemon_factory, hwsim):
    config = _http_config(tmp_path, hwsim, "http://127.0.0.1:9/open", 1.0)
    d = daemon_factory(config=config)
    d.start()
    names = lambda: [f["name"] for f in d.ctl_json("status")["features"]]  # noqa: E731
    assert "keypad" in names()
    config.write_text(config.read_text().replace("[keypad]\nenabled = true", "[keypad]\nenabled = false"))
    d.signal(signal.SIGHUP)
    d.wait_message("READY=1")
    assert "keypad" not in names() and names()[-1] == "control"
    config.write_text(config.read_text().replace("[keypad]\nenabled = false", "[keypad]\nenabled = true"))
    d.signal(signal.SIGHUP)
    d.wait_message("READY=1")
    assert names().index("keypad") < names().index("control")
