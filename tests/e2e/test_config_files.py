"""Configuration files, state files and reloads, through the real binaries."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from doorphoned.core.config import embedded_default_text
from tests.procs import ROOT, wait_for
from tests.sipp import wait_sip_up

DOORPHONED = str(ROOT / ".venv" / "bin" / "doorphoned")
DOORPHONECTL = str(ROOT / ".venv" / "bin" / "doorphonectl")


def _sim_config(tmp_path: Path, hwsim) -> Path:
    """The embedded default pointed at this test's hw-sim, state under the daemon fixture's home."""
    text = embedded_default_text().replace('state_dir = "var"', f'state_dir = "{tmp_path / "d" / "var"}"')
    text = text.replace('hwsim_socket = "var/hwsim.sock"', f'hwsim_socket = "{hwsim.socket}"')
    text = text.replace('port = "var/keypad.tty"', f'port = "{hwsim.keypad_link}"')
    text = text.replace('device = "udp:127.0.0.1:54321"', f'device = "{hwsim.info["nfc"]["device"]}"')
    text = text.replace('source = "http://127.0.0.1:8090/camera.mjpg"', f'source = "{hwsim.info["camera"]["url"]}"')
    path = tmp_path / "doorphoned.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", ["x = " + "[" * 500, "x = " + "{a = " * 500, "[site]\nname = 1\nname = 2\n",
                                  "[[doors]]\nid = 1\nhold_time = nan\n", "[site]\nname = \"\\u0000\"\n"])
def test_hostile_file_exits_78_with_one_line(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    check = subprocess.run([DOORPHONED, "--check-config", "--config", str(path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 78, check.stderr
    assert len(check.stderr.strip().splitlines()) == 1 and "Traceback" not in check.stderr
    assert check.stderr.startswith("doorphoned: configuration error: ")
    start = subprocess.run([DOORPHONED, "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert start.returncode == 78 and start.stderr == check.stderr
    ctl = subprocess.run([DOORPHONECTL, "config", "validate", str(path)], capture_output=True, text=True, timeout=30)
    assert ctl.returncode == 1 and len(ctl.stderr.strip().splitlines()) == 1
    assert ctl.stderr.startswith("doorphonectl: invalid configuration: ")


def test_config_without_doors_warns(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    check = subprocess.run([DOORPHONED, "--check-config", "--config", str(path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0 and "0 doors" in check.stdout
    assert "warning: no [[doors]] configured" in check.stderr
    ctl = subprocess.run([DOORPHONECTL, "config", "validate", str(path)], capture_output=True, text=True, timeout=30)
    assert ctl.returncode == 0 and "warning: no [[doors]] configured" in ctl.stderr


def test_sighup_with_deeply_nested_file_is_refused_and_old_config_kept(tmp_path, daemon_factory, hwsim):
    config = _sim_config(tmp_path, hwsim)
    d = daemon_factory(config=config)
    d.start()
    good = config.read_text()
    config.write_text(good + "\nx = " + "[" * 500 + "\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in d.log_text(), timeout=15, what="reload refused")
    refused = [line for line in d.log_text().splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "nested more than 32 levels deep" in refused[0]
    assert "Traceback" not in d.log_text() and len(d.log_text().splitlines()) < 50
    d.ctl("relay", "open", "1")  # the old configuration still runs
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, what="relay 1 pulsed")
    assert d.ctl_json("status")["pid"] == d.proc.pid


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_state_files_are_owner_only_whatever_the_umask(daemon_factory, hwsim):
    d = daemon_factory()
    d.state_dir.mkdir(parents=True)
    (d.state_dir / "log").mkdir()
    (d.state_dir / "log" / "doorphoned.log").write_text("left by an older run\n")
    d.state_dir.chmod(0o755)
    (d.state_dir / "log" / "doorphoned.log").chmod(0o644)
    old = os.umask(0o022)  # a login shell's umask, inherited by the daemon
    try:
        d.start()
    finally:
        os.umask(old)
    d.ctl("relay", "open", "1")  # something written to the database and its WAL
    db = d.state_dir / "doorphoned.db"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), d.state_dir / "log" / "doorphoned.log",
                 d.state_dir / "device.key"):
        assert _mode(path) == 0o600, (path, oct(_mode(path)))
    assert _mode(d.state_dir / "log") == 0o700
    assert _mode(d.socket) == 0o660
    assert _mode(d.state_dir) in (0o700, 0o750)
    wait_sip_up(d)  # doctor checks SIP too, whose process starts after READY
    doctor = {c["check"]: c for c in d.ctl_json("doctor")}
    assert doctor["database mode"]["state"] == "ok"
    db.chmod(0o644)
    result = d.ctl("doctor", "--json", check=False)
    assert result.returncode == 2  # a failed check
    doctor = {c["check"]: c for c in json.loads(result.stdout)}
    assert doctor["database mode"]["state"] == "fail"
    assert "doorphoned.db is mode 644" in doctor["database mode"]["detail"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another uid")
def test_control_group_reaches_the_socket_but_not_the_database(daemon_factory, hwsim, tmp_path):
    """The state dir is 0750 with the control socket's group: a member runs doorphonectl; nobody else
    (and not the member either) reads the database."""
    import grp
    import shutil

    try:
        gid = grp.getgrnam("doorphoned").gr_gid
    except KeyError:
        pytest.skip("no doorphoned group")
    d = daemon_factory()
    d.start()
    assert _mode(d.state_dir) == 0o750 and d.state_dir.stat().st_gid == gid
    copy = tmp_path / "ctl-copy"
    shutil.copytree(ROOT / "doorphoned", copy / "doorphoned", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [tmp_path, copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for parent in d.state_dir.parents:  # pytest's tmp dirs are 0700: let the member walk down to var/
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)

    def as_user(group: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["setpriv", "--reuid", "nobody", "--regid", group, "--clear-groups",
                               "/usr/bin/python3", *argv], capture_output=True, text=True, timeout=30, cwd=copy,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)})

    member = as_user("doorphoned", "-m", "doorphoned.ctl", "--socket", str(d.socket), "status")
    assert member.returncode == 0, member.stderr
    read = as_user("doorphoned", "-c", f"open({str(d.state_dir / 'doorphoned.db')!r}, 'rb')")
    assert read.returncode != 0 and "PermissionError" in read.stderr
    outsider = as_user("nogroup", "-m", "doorphoned.ctl", "--socket", str(d.socket), "status")
    assert outsider.returncode != 0
