"""Helpers of the phone tests (tests/e2e/test_phone*.py): enrol hw-sim's phones, read the door log and relays."""

from __future__ import annotations

from pathlib import Path

from tests.procs import Daemon, HwSim, wait_for


def access_entries(daemon: Daemon, count: int) -> list[dict]:
    return wait_for(lambda: (e := daemon.door_log(kind="access")) and len(e) >= count and e, timeout=30,
                    what=f"{count} access entries")


def enrol(daemon: Daemon, hwsim: HwSim, tmp_path: Path, phone: str, user: str, *extra: str) -> dict:
    pem = tmp_path / f"{phone}.pub.pem"
    pem.write_text(hwsim.cmd("phone", "add", phone).stdout)
    return daemon.ctl_json("phone", "add", user, "--public-key", str(pem), "--id", phone, *extra)


def unit_key(daemon: Daemon, tmp_path: Path) -> str:
    path = tmp_path / "unit.pem"
    path.write_text(daemon.ctl_json("status")["unit"]["public_key"])
    return str(path)


def energised(hwsim: HwSim, n: int = 1) -> int:
    return int(hwsim.relay(n)["energise_count"])


def feature(daemon: Daemon, name: str) -> dict:
    return next(f for f in daemon.call("status")["features"] if f["name"] == name)  # polled: in-process
