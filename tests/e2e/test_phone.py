"""Phone credentials end to end: doorphoned and hw-sim as real processes, hw-sim playing the phone (docs/phone.md).

NFC: hw-sim's phone is an ISO-DEP target on nfcpy's udp link. BLE: hw-sim's private dbus-daemon with a fake
org.bluez, scanned by the daemon's bleak. Every refusal names its reason in the door log and moves no relay.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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


@pytest.fixture
def ble_daemon(daemon_factory, hwsim):
    if not hwsim.info["ble"]["bus"]:
        pytest.fail(f"hw-sim runs no fake BlueZ: {hwsim.info['ble']['error']}")
    d = daemon_factory(env={"DOORPHONED_BLE_ENABLED": "true", "DOORPHONED_BLE_BUS": hwsim.info["ble"]["bus"],
                            "DOORPHONED_BLE_DOORS": "[1]"})
    d.start()
    wait_for(lambda: _feature(d, "ble")["reader"] == "ok", timeout=30, what="BLE reader scanning")
    return d


def _feature(daemon: Daemon, name: str) -> dict:
    return next(f for f in daemon.ctl_json("status")["features"] if f["name"] == name)


# ---------------------------------------------------------------- NFC


def test_nfc_phone_opens_and_a_replayed_answer_is_refused(daemon, hwsim, tmp_path):
    user = daemon.ctl_json("user", "add", "Ann", "--doors", "1")["id"]
    enrol(daemon, hwsim, tmp_path, "ann-phone", user, "--modes", "nfc")
    hwsim.cmd("phone", "nfc", "ann-phone", "--unit-key", unit_key(daemon, tmp_path))
    wait_for(lambda: energised(hwsim) >= 1, timeout=20, what="relay 1 energised by the phone")
    [entry] = access_entries(daemon, 1)
    assert (entry["credential"], entry["user_id"], entry["granted"]) == ("nfc_phone", user, True)
    assert entry["detail"] == {"phone_key": "ann-phone", "mode": "nfc"}
    hwsim.cmd("phone", "replay", "--kind", "nfc")  # the recorded answer, to a new challenge
    entries = access_entries(daemon, 2)
    assert (entries[0]["granted"], entries[0]["reason"], entries[0]["detail"]["phone_key"]) == \
        (False, "replayed", "ann-phone")
    assert energised(hwsim) == 1


def test_nfc_phone_refusals_wrong_key_expired_removed_and_cards_still_work(daemon, hwsim, tmp_path):
    user = daemon.ctl_json("user", "add", "Bo", "--doors", "1")["id"]
    enrol(daemon, hwsim, tmp_path, "bo-phone", user)
    hwsim.cmd("phone", "add", "thief")  # a phone that claims bo-phone's key id with a key of its own
    (hwsim.socket.parent / "phones" / "thief.json").write_text(json.dumps({"key_id": "bo-phone", "counter": 0}))
    hwsim.cmd("phone", "nfc", "thief")
    assert access_entries(daemon, 1)[0]["reason"] == "bad_signature"
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    enrol(daemon, hwsim, tmp_path, "old-phone", user, "--expires", past)
    hwsim.cmd("phone", "nfc", "old-phone")
    assert access_entries(daemon, 2)[0]["reason"] == "expired"
    daemon.ctl("card", "add", user, "04A1B2C3")  # a plain card next to phones: still a card
    hwsim.cmd("nfc", "tap", "04A1B2C3")
    assert access_entries(daemon, 3)[0]["credential"] == "card"
    wait_for(lambda: energised(hwsim) == 1, timeout=20, what="the card's opening")
    daemon.ctl("user", "remove", user)
    hwsim.cmd("phone", "nfc", "bo-phone")
    entry = access_entries(daemon, 4)[0]
    assert (entry["credential"], entry["reason"]) == ("nfc_phone", "unknown")
    assert energised(hwsim) == 1
    assert daemon.ctl_json("phone", "list") == []
