"""Phone credentials end to end: doorphoned and hw-sim as real processes, hw-sim playing the phone (docs/phone.md).

NFC: hw-sim's phone is an ISO-DEP target on nfcpy's udp link. BLE: hw-sim's private dbus-daemon with a fake
org.bluez, scanned by the daemon's bleak. Every refusal names its reason in the door log and moves no relay.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.phones import access_entries, energised, enrol, feature, unit_key
from tests.procs import HwSim, wait_for

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
    night = daemon.ctl_json("user", "add", "Nox", "--doors", "1", "--schedule", _twelve_hours_away(daemon))["id"]
    enrol(daemon, hwsim, tmp_path, "nox-phone", night)
    hwsim.cmd("phone", "nfc", "nox-phone")
    assert access_entries(daemon, 3)[0]["reason"] == "outside_schedule"
    daemon.ctl("card", "add", user, "04A1B2C3")  # a plain card next to phones: still a card
    hwsim.cmd("nfc", "tap", "04A1B2C3")
    assert access_entries(daemon, 4)[0]["credential"] == "card"
    wait_for(lambda: energised(hwsim) == 1, timeout=20, what="the card's opening")
    daemon.ctl("user", "remove", user)
    hwsim.cmd("phone", "nfc", "bo-phone")
    entry = access_entries(daemon, 5)[0]
    assert (entry["credential"], entry["reason"]) == ("nfc_phone", "unknown")
    assert energised(hwsim) == 1
    assert [k["id"] for k in daemon.ctl_json("phone", "list")] == ["nox-phone"]  # Bo's went with Bo


def _twelve_hours_away(daemon) -> str:
    """A daily hour that is not now, in the site's time zone, whatever the date and time the test runs at."""
    from zoneinfo import ZoneInfo

    hour = (datetime.now(ZoneInfo(daemon.ctl_json("status")["timezone"])).hour + 12) % 24
    return f"mon-sun {hour:02d}:00-{hour:02d}:59"


# ---------------------------------------------------------------- Bluetooth


def ble(hwsim: HwSim, phone: str, key: str, *extra: str, check: bool = True):
    return hwsim.cmd("phone", "ble", phone, "--unit-key", key, *extra, check=check)


@pytest.mark.slow
def test_each_bluetooth_mode_opens_and_is_logged_with_mode_and_key(ble_daemon, hwsim, tmp_path):
    d = ble_daemon
    user = d.ctl_json("user", "add", "Cy", "--doors", "1")["id"]
    key = unit_key(d, tmp_path)
    enrol(d, hwsim, tmp_path, "cy-phone", user)
    for count, (mode, rssi, walk) in enumerate(
            [("hands-free", "-55", ["--walk-in"]), ("tap", "-35", []), ("shake", "-60", [])], start=1):
        ble(hwsim, "cy-phone", key, "--mode", mode, "--rssi", rssi, *walk)
        wait_for(lambda n=count: energised(hwsim) >= n, timeout=20, what=f"relay 1 opened by {mode}")
        entry = access_entries(d, count)[0]
        assert (entry["credential"], entry["granted"], entry["user_id"]) == ("ble", True, user)
        assert entry["detail"] == {"phone_key": "cy-phone", "mode": mode}
        # The next phone must find the door shut: a grant while it is still held open is no new pulse.
        wait_for(lambda: hwsim.relay(1)["state"] == "released", timeout=30, what="relay 1 released again")


@pytest.mark.slow
def test_bluetooth_refusals_too_far_replayed_other_unit_schedule(ble_daemon, hwsim, tmp_path, daemon_factory):
    d = ble_daemon
    user = d.ctl_json("user", "add", "Di", "--doors", "1")["id"]
    key = unit_key(d, tmp_path)
    enrol(d, hwsim, tmp_path, "di-phone", user, "--modes", "hands-free")
    ble(hwsim, "di-phone", key, "--mode", "hands-free", "--rssi", "-80", "--seconds", "4")
    assert access_entries(d, 1)[0]["reason"] == "too_far"
    ble(hwsim, "di-phone", key, "--mode", "hands-free", "--rssi", "-50")
    wait_for(lambda: energised(hwsim) == 1, timeout=20, what="the hands-free opening")
    wait_for(lambda: feature(d, "ble")["tokens_in_air"] == 0, timeout=10, what="the token out of the air")
    hwsim.cmd("phone", "replay", "--kind", "ble")
    assert access_entries(d, 3)[0]["reason"] == "replayed"
    other = tmp_path / "other-unit.pem"  # a token made for another unit: its MAC does not verify here
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ble(hwsim, "di-phone", str(other), "--mode", "hands-free", "--rssi", "-50")
    assert access_entries(d, 4)[0]["reason"] == "bad_signature"
    ble(hwsim, "di-phone", key, "--mode", "tap", "--rssi", "-30")
    assert access_entries(d, 5)[0]["reason"] == "mode_not_allowed"
    ble(hwsim, "di-phone", key, "--mode", "hands-free", "--rssi", "-50", "--door", "2")
    assert access_entries(d, 6)[0]["reason"] == "door_not_allowed"
    assert energised(hwsim) == 1
    assert energised(hwsim, 2) == 0


def test_bluetooth_replay_stays_refused_after_a_kill(ble_daemon, hwsim, tmp_path):
    d = ble_daemon
    user = d.ctl_json("user", "add", "Ed", "--doors", "1")["id"]
    key = unit_key(d, tmp_path)
    enrol(d, hwsim, tmp_path, "ed-phone", user)
    ble(hwsim, "ed-phone", key, "--rssi", "-50")
    wait_for(lambda: energised(hwsim) == 1, timeout=20, what="the opening")
    d.kill()
    d.start()
    wait_for(lambda: feature(d, "ble")["reader"] == "ok", timeout=30, what="BLE reader scanning again")
    hwsim.cmd("phone", "replay", "--kind", "ble")
    assert access_entries(d, 2)[0]["reason"] == "replayed"
    assert energised(hwsim) == 1


# ---------------------------------------------------------------- the cloud


def test_cloud_delivers_phone_keys_and_publishes_the_unit_key(unit, broker, hwsim, tmp_path):
    from tests.mqtt import Client, cloud_send

    watcher = Client(broker, "cloud")
    watcher.subscribe("doorphone/v1/unit-b/state")
    state = wait_for(lambda: [s for s in watcher.json_messages("doorphone/v1/unit-b/state") if s["online"]],
                     what="retained state")[-1]
    watcher.close()
    assert state["unit"] == unit.ctl_json("status")["unit"]
    assert state["unit"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    pem = hwsim.cmd("phone", "add", "fay-phone").stdout
    code, reply, _ = cloud_send(broker, "unit-b", "user.upsert", {
        "user_id": "emp-9", "name": "Fay", "doors": [1],
        "phone_keys": [{"id": "fay-phone", "public_key": pem, "modes": ["nfc"]}]})
    assert code == 0 and reply["result"]["phone_keys"] == ["fay-phone"], reply
    hwsim.cmd("phone", "nfc", "fay-phone")
    wait_for(lambda: energised(hwsim) == 1, timeout=20, what="the cloud-enrolled phone's opening")
    bad = cloud_send(broker, "unit-b", "user.upsert", {
        "user_id": "emp-9", "name": "Fay", "phone_keys": [{"id": "x", "public_key": "not a key"}]})
    assert not bad[1]["ok"] and "P-256" in bad[1]["error"]
    assert [k["id"] for k in unit.ctl_json("phone", "list")] == ["fay-phone"]  # the refused upsert changed nothing
    code, reply, _ = cloud_send(broker, "unit-b", "user.upsert", {"user_id": "emp-9", "name": "Fay", "phone_keys": []})
    assert reply["result"]["phone_keys"] == []
    # The reader counts a phone once per stay in its field (nfc.repeat_delay after its last sighting): tapped
    # again sooner, the second tap is the same presentation and logs nothing (it did, on a quick machine).
    wait_for(lambda: feature(unit, "nfc")["cards_in_field"] == 0, timeout=20, what="the phone out of the field")
    hwsim.cmd("phone", "nfc", "fay-phone")
    assert access_entries(unit, 2)[0]["reason"] == "unknown"
    assert energised(hwsim) == 1


def test_phone_cli_refuses_bad_input_and_removal_stops_the_key_at_once(daemon, hwsim, tmp_path):
    user = daemon.ctl_json("user", "add", "Hal", "--doors", "1")["id"]
    missing = daemon.ctl("phone", "add", user, "--public-key", str(tmp_path / "nope.pem"), check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\n\x00\xff" + "\u202e".encode() + b"\n-----END PUBLIC KEY-----\n")
    bad = daemon.ctl("phone", "add", user, "--public-key", str(garbage), check=False)
    assert bad.returncode == 1 and "control character" in bad.stderr  # the strict JSON of the control socket
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n")
    bad = daemon.ctl("phone", "add", user, "--public-key", str(garbage), check=False)
    assert bad.returncode == 1 and "P-256" in bad.stderr
    enrol(daemon, hwsim, tmp_path, "hal-phone", user, "--modes", "nfc")
    twice = daemon.ctl("phone", "add", user, "--public-key", str(tmp_path / "hal-phone.pub.pem"), check=False)
    assert twice.returncode == 1 and "already enrolled" in twice.stderr
    modes = daemon.ctl("phone", "add", user, "--public-key", str(garbage), "--modes", "fly", check=False)
    assert modes.returncode == 1
    assert [k["id"] for k in daemon.ctl_json("phone", "list", "--user", user)] == ["hal-phone"]
    assert daemon.ctl_json("user", "show", user)["phone_keys"] == ["hal-phone"]
    daemon.ctl("phone", "remove", "hal-phone")
    hwsim.cmd("phone", "nfc", "hal-phone")
    assert access_entries(daemon, 1)[0]["reason"] == "unknown"
    assert energised(hwsim) == 0
    gone = daemon.ctl("phone", "remove", "hal-phone", check=False)
    assert gone.returncode == 1 and "no phone key" in gone.stderr


def test_bluetooth_reader_heals_when_the_bus_comes_back(ble_daemon, hwsim, tmp_path):
    d = ble_daemon
    user = d.ctl_json("user", "add", "Ida", "--doors", "1")["id"]
    enrol(d, hwsim, tmp_path, "ida-phone", user)
    key = unit_key(d, tmp_path)
    hwsim.stop()  # BlueZ's bus (and the board) gone
    wait_for(lambda: feature(d, "ble")["reader"] == "fault", timeout=30, what="the BLE reader to notice")
    hwsim.start()
    wait_for(lambda: feature(d, "ble")["reader"] == "ok", timeout=60, what="the BLE reader scanning again")
    wait_for(lambda: feature(d, "doors")["state"] == "running", timeout=60, what="the doors back")
    ble(hwsim, "ida-phone", key, "--rssi", "-50")
    wait_for(lambda: energised(hwsim) == 1, timeout=30, what="the phone to open after the bus came back")
