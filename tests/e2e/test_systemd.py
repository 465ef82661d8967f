"""The systemd unit as systemd itself reads it (systemd-analyze works without systemd as PID 1)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.procs import ROOT

UNIT = ROOT / "systemd" / "doorphoned.service"
INSTALLED_BIN = "/opt/doorphoned/bin/doorphoned"
EXPOSURE_LIMIT = 2.5

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing: scripts/setup.sh installs the systemd package")


def test_unit_verifies(tmp_path: Path):
    # The unit names the installed path; point it at this checkout's daemon so verify can check it exists.
    unit = tmp_path / "doorphoned.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BIN, str(ROOT / ".venv" / "bin" / "doorphoned")))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    original = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)], capture_output=True, text=True)
    complaints = [line for line in original.stderr.splitlines() if line.strip()]
    assert all(f"Command {INSTALLED_BIN} is not executable" in line for line in complaints), complaints


def test_unit_is_notify_with_watchdog_and_restart():
    text = UNIT.read_text()
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=doorphoned",
                      "RestartPreventExitStatus=78", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert directive in text


def test_security_exposure_is_at_most_2_5():
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True,
                            text=True)
    match = re.search(r"Overall exposure level for doorphoned.service: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout[-2000:]
    exposure = float(match.group(1))
    assert exposure <= EXPOSURE_LIMIT
    documented = (ROOT / "docs" / "operator-guide.md").read_text()
    assert f"exposure {exposure}" in documented, "update the figure in docs/operator-guide.md"


def test_sysusers_and_tmpfiles_snippets_apply(tmp_path: Path):
    """sysusers creates the user and groups in a scratch root; tmpfiles then makes the directories there."""
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    (tmp_path / "etc").mkdir()
    users = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(ROOT / "systemd" / "doorphoned.sysusers")],
                           capture_output=True, text=True)
    assert users.returncode == 0, users.stderr
    dirs = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                           str(ROOT / "systemd" / "doorphoned.tmpfiles")], capture_output=True, text=True)
    assert dirs.returncode == 0, dirs.stderr
    group = (tmp_path / "etc" / "group").read_text()
    assert re.search(r"^doorphoned:x:\d+:", group, re.M)
    assert re.search(r"^gpio:x:\d+:doorphoned", group, re.M)
    assert re.search(r"^doorphoned:x:\d+:\d+:Door phone daemon:/var/lib/doorphoned:", (tmp_path / "etc" / "passwd")
                     .read_text(), re.M)
    state = tmp_path / "var" / "lib" / "doorphoned"
    assert state.is_dir() and state.stat().st_mode & 0o777 == 0o750
