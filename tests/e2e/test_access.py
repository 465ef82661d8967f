"""Local access control end to end: users, PINs, cards and temp keys through doorphonectl and hw-sim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dates import at, monday_ahead
from tests.procs import wait_for


def add_user_with_pin(d, name: str, pin: str, *extra: str) -> str:
    user = d.ctl_json("user", "add", name, *extra)
    result = d.ctl("pin", "set", user["id"], input=pin + "\n")
    assert "PIN set" in result.stdout
    return user["id"]


def keypad(hwsim, keys: str) -> None:
    hwsim.cmd("keypad", keys)


def access_entries(d, n: int) -> list[dict]:
    """The access entries once ``n`` presentations are in (repeated refusals are one entry with a count)."""
    return wait_for(lambda: (e := d.door_log(kind="access")) and sum(x["detail"].get("count", 1) for x in e) >= n
                    and e, what=f"{n} access entries")


def test_private_pin_on_the_keypad_opens_the_users_door(daemon, hwsim):
    uid = add_user_with_pin(daemon, "Alice", "2580", "--department", "R&D", "--doors", "1")
    keypad(hwsim, "2580#")
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised")
    [entry] = access_entries(daemon, 1)
    assert (entry["credential"], entry["user_id"], entry["granted"], entry["door"]) == ("pin", uid, True, 1)
    assert "2580" not in json.dumps(daemon.door_log()) and "2580" not in daemon.log_text()
    keypad(hwsim, "0007#")
    entries = access_entries(daemon, 2)
    assert (entries[0]["granted"], entries[0]["reason"]) == (False, "unknown")


def test_bad_keypad_input_is_refused_and_changes_nothing(daemon, hwsim):
    add_user_with_pin(daemon, "Alice", "2580")
    keypad(hwsim, "1" * 40 + "#")
    keypad(hwsim, "25A80#")
    entries = access_entries(daemon, 2)
    assert [(e["reason"], e["detail"]["detail"]) for e in reversed(entries)] == [
        ("malformed", "entry longer than 16 keys"), ("malformed", "entry contains a key that is not a digit")]
    assert hwsim.relay(1)["energise_count"] == 0
    keypad(hwsim, "2580#")  # the reader still works
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised")


@pytest.mark.slow
def test_lockout_after_five_wrong_pins_and_cards_keep_working(daemon_factory, hwsim):
    # Long enough that a kill -9 and a restart on a loaded machine surely fall inside the lockout; its end
    # is then awaited as a condition, never as a margin.
    d = daemon_factory(env={"DOORPHONED_ACCESS_LOCKOUT_FIRST": "60"})
    d.start()
    uid = add_user_with_pin(d, "Alice", "2580")
    d.ctl("card", "add", uid, "04:a1:b2:c3")
    for _ in range(5):
        keypad(hwsim, "9999#")
    [wrong] = access_entries(d, 5)
    assert (wrong["reason"], wrong["detail"]["count"]) == ("unknown", 5)  # one entry, counted
    wait_for(lambda: d.door_log(kind="alarm"), what="lockout alarm")
    keypad(hwsim, "2580#")  # the right PIN, but the keypad is locked
    entries = access_entries(d, 6)
    assert entries[0]["reason"] == "locked_out" and hwsim.relay(1)["energise_count"] == 0
    assert d.ctl_json("access", "check", "--door", "1", "--pin", "2580")["reason"] == "locked_out"
    assert d.ctl_json("access", "check", "--door", "1", "--card", "04A1B2C3")["granted"]
    alarm = d.door_log(kind="alarm")[-1]
    assert alarm["reason"] == "keypad_lockout" and alarm["detail"]["active"]
    d.kill()  # a reboot does not reset the lockout
    d.start()
    assert d.ctl_json("access", "check", "--door", "1", "--pin", "2580")["reason"] == "locked_out"
    # Polled every 2 s: each poll is a doorphonectl process, and the lockout's end is a minute away.
    wait_for(lambda: d.ctl_json("access", "check", "--door", "1", "--pin", "2580")["granted"], timeout=180,
             interval=2, what="the lockout to end")
    keypad(hwsim, "2580#")
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 after lockout")
    cleared = wait_for(lambda: [a for a in d.door_log(kind="alarm") if not a["detail"]["active"]], what="cleared")
    assert cleared[0]["reason"] == "keypad_lockout"


def test_temp_key_pin_counts_never_exceed_the_limit_even_with_kill_9(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    d.start()
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = d.ctl_json("tempkey", "create", "--name", "Plumber", "--doors", "1", "--repeat", "never",
                     "--end", end, "--count", "3")
    assert set(key) >= {"id", "pin", "qr"} and len(key["pin"]) == 8
    for i in range(5):
        keypad(hwsim, key["pin"] + "#")
        access_entries(d, i + 1)
        if i in (0, 2):
            d.kill()  # power cut between uses
            d.start()
        wait_for(lambda: not hwsim.relay(1)["energised"], timeout=15, what="relay released")
    entries = list(reversed(d.door_log(kind="access")))
    assert [e["granted"] for e in entries] == [True, True, True, False, False]
    assert entries[-1]["reason"] == "uses_exhausted" and entries[0]["key_id"] == key["id"]
    assert d.ctl_json("tempkey", "show", key["id"])["uses"] == {"1": 3}
    assert d.ctl_json("tempkey", "show", key["id"])["uses_left"] == {"1": 0}
    shown = d.ctl("tempkey", "show", key["id"]).stdout
    assert "uses     3 per door" in shown and "  door  used  left\n     1     3     0" in shown and "{" not in shown
    assert hwsim.relay(1)["energise_count"] == 3


def test_qr_check_and_deleted_key_stops_at_once(daemon, hwsim):
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = daemon.ctl_json("tempkey", "create", "--name", "Guest", "--doors", "1,2", "--end", end, "--count", "1")
    check = daemon.ctl_json("access", "check", "--door", "2", "--qr", key["qr"])
    assert check["granted"] and check["key"] == {"id": key["id"], "name": "Guest"}
    assert daemon.ctl_json("tempkey", "show", key["id"])["uses"] == {"1": 0, "2": 0}  # check used nothing
    daemon.ctl("tempkey", "remove", key["id"])
    assert daemon.ctl_json("access", "check", "--door", "2", "--qr", key["qr"])["reason"] == "unknown"
    keypad(hwsim, key["pin"] + "#")
    assert access_entries(daemon, 1)[0]["reason"] == "unknown"


def test_access_check_explains_every_reason(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_SITE_TIMEZONE": "Europe/Berlin"})
    d.start()
    add_user_with_pin(d, "Office", "2580", "--doors", "1", "--schedule", "mon-fri 08:00-18:00")
    add_user_with_pin(d, "Gone", "7391", "--disabled")
    monday = monday_ahead()  # every instant below is weeks ahead, whatever today is
    daily = d.ctl_json("tempkey", "create", "--name", "Cleaner", "--doors", "1", "--repeat", "daily",
                       "--start", at(monday, "00:00", -21), "--end", at(monday, "00:00", 21),
                       "--from", "18:00", "--to", "22:00")
    never = d.ctl_json("tempkey", "create", "--name", "Courier", "--doors", "1", "--start", at(monday, "09:00", 1),
                       "--end", at(monday, "12:00", 1), "--count", "1")

    def check(*args: str) -> str:
        return d.ctl_json("access", "check", *args)["reason"]

    monday_noon = at(monday, "12:00")
    assert check("--door", "1", "--pin", "2580", "--at", monday_noon) == "granted"
    assert check("--door", "1", "--pin", "2580", "--at", at(monday, "12:00", -1)) == "outside_schedule"  # Sunday
    assert check("--door", "2", "--pin", "2580", "--at", monday_noon) == "door_not_allowed"
    assert check("--door", "1", "--pin", "7391", "--at", monday_noon) == "disabled"
    assert check("--door", "1", "--pin", "0000", "--at", monday_noon) == "unknown"
    assert check("--door", "1", "--pin", "12", "--at", monday_noon) == "malformed"
    assert check("--door", "9", "--pin", "2580", "--at", monday_noon) == "unknown_door"
    assert check("--door", "1", "--qr", daily["qr"], "--at", at(monday, "19:00")) == "granted"
    assert check("--door", "1", "--qr", daily["qr"], "--at", at(monday, "17:00")) == "outside_schedule"
    assert check("--door", "1", "--qr", daily["qr"], "--at", at(monday, "19:00", 33)) == "expired"
    assert check("--door", "1", "--pin", never["pin"], "--at", at(monday, "08:59", 1)) == "not_yet_valid"
    assert check("--door", "1", "--qr", "WIFI:S:x;;", "--at", monday_noon) == "malformed"
    assert check("--door", "1", "--qr", "D" * 10_000, "--at", monday_noon) == "malformed"
    assert check("--door", "1", "--card", "04A1B2C3", "--at", monday_noon) == "unknown"
    # uses_exhausted and locked_out are shown through access check in the tests above and below


def test_uses_exhausted_shown_by_access_check(daemon, hwsim):
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = daemon.ctl_json("tempkey", "create", "--name", "Once", "--doors", "1", "--end", end, "--count", "1")
    keypad(hwsim, key["pin"] + "#")
    access_entries(daemon, 1)
    result = daemon.ctl_json("access", "check", "--door", "1", "--pin", key["pin"])
    assert result["reason"] == "uses_exhausted" and "all 1 uses on door 1 are spent" in result["detail"]


@pytest.fixture(scope="module")
def refusing_daemon(shared_daemon_factory):
    """One daemon for the module's refusals: each asserts that it created nothing, so they can share it."""
    d = shared_daemon_factory()
    d.start()
    return d


@pytest.mark.parametrize(("args", "message"), [
    (["--repeat", "never", "--count", "0"], "between 1 and 100"),
    (["--repeat", "never", "--count", "101"], "between 1 and 100"),
    (["--repeat", "daily", "--count", "5"], "only repeat=never keys have a use count"),
    (["--repeat", "weekly", "--days", "mon,funday"], "unknown weekday"),
    (["--repeat", "weekly"], "weekly keys need --days"),
    (["--repeat", "daily", "--from", "25:00", "--to", "26:00"], "time of day must be HH:MM"),
    (["--start", "2026-02-30T10:00"], "not an ISO 8601"),
    (["--start", "2026-01-01T10:00+25:00"], "not an ISO 8601"),
    (["--doors", "7"], "no door 7"),
])
def test_bad_tempkey_arguments_are_refused_and_create_nothing(refusing_daemon, args, message):
    daemon = refusing_daemon
    end = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    base = {"--name": "X", "--doors": "1", "--end": end}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1] if i + 1 < len(args) else ""
    argv = [a for kv in base.items() for a in kv if a != ""]
    result = daemon.ctl("tempkey", "create", *argv, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert daemon.ctl_json("tempkey", "list") == []


def test_user_cards_and_removal_take_every_credential(daemon, hwsim):
    uid = add_user_with_pin(daemon, "Carol", "4826")
    for i in range(5):
        daemon.ctl("card", "add", uid, f"04A1B2C{i}")
    sixth = daemon.ctl("card", "add", uid, "04A1B2CF", check=False)
    assert sixth.returncode == 1 and "already has 5 cards" in sixth.stderr
    other = daemon.ctl_json("user", "add", "Dave")
    dup = daemon.ctl("card", "add", other["id"], "04a1b2c0", check=False)
    assert dup.stderr.strip() == f"doorphonectl: card 04A1B2C0 is already enrolled to user '{uid}'"  # quotes closed
    collide = daemon.ctl("pin", "set", other["id"], input="4826\n", check=False)
    assert collide.returncode == 1 and "already in use" in collide.stderr
    weak = daemon.ctl("pin", "set", other["id"], input="1234\n", check=False)
    assert "too easy" in weak.stderr
    shown = daemon.ctl_json("user", "show", uid)
    assert shown["pin_set"] and len(shown["cards"]) == 5
    daemon.ctl("user", "remove", uid)
    assert daemon.ctl_json("access", "check", "--door", "1", "--card", "04A1B2C0")["reason"] == "unknown"
    assert daemon.ctl_json("access", "check", "--door", "1", "--pin", "4826")["reason"] == "unknown"
    assert daemon.ctl("user", "show", uid, check=False).returncode == 1


def test_tempkey_qr_png_is_a_readable_qr_code(daemon, tmp_path):
    import cv2
    from pyzbar import pyzbar

    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = daemon.ctl_json("tempkey", "create", "--name", "Visitor", "--doors", "1", "--end", end)
    png = tmp_path / "key.png"
    daemon.ctl("tempkey", "qr", key["id"], "--png", str(png))
    [symbol] = pyzbar.decode(cv2.imread(str(png)))
    assert symbol.data.decode() == key["qr"]
    terminal = daemon.ctl("tempkey", "create", "--name", "V2", "--doors", "1", "--end", end).stdout
    assert ("PIN: " in terminal and "█" in terminal) or "▀" in terminal


def test_keypad_unplugged_degrades_only_the_keypad_and_recovers(daemon, hwsim):
    add_user_with_pin(daemon, "Alice", "2580")
    hwsim.cmd("keypad", "unplug")
    reader = wait_for(lambda: (f := _feature(daemon, "keypad")) and f["reader"] == "fault" and f, what="fault")
    assert reader["reader_error"]
    daemon.ctl("relay", "open", "2")  # the rest of the unit works
    hwsim.cmd("keypad", "plug")
    wait_for(lambda: _feature(daemon, "keypad")["reader"] == "ok", timeout=15, what="keypad back")
    keypad(hwsim, "2580#")
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised")


def _feature(d, name: str) -> dict:
    return next(f for f in d.ctl_json("status")["features"] if f["name"] == name)


def test_cli_validates_before_sending(daemon):
    bad = subprocess.run([*daemon.ctl_argv(), "tempkey", "create", "--name", "x", "--doors", "1,x", "--end", "2030"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "doors must be numbers" in bad.stderr


def test_nfc_card_tap_opens_and_unknown_card_is_logged(daemon, hwsim):
    uid = daemon.ctl_json("user", "add", "Erin", "--doors", "1")["id"]
    daemon.ctl("card", "add", uid, "04A1B2C3D4E5F6")
    hwsim.cmd("nfc", "tap", "04:a1:b2:c3:d4:e5:f6")
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised by card")
    [entry] = access_entries(daemon, 1)
    assert (entry["credential"], entry["user_id"], entry["granted"]) == ("card", uid, True)
    hwsim.cmd("nfc", "tap", "04FFEE01")
    entries = access_entries(daemon, 2)
    assert (entries[0]["reason"], entries[0]["subject"]) == ("unknown", "card 04FFEE01")
    bad = hwsim.cmd("nfc", "tap", "04A1B2C3D4E5F6A7B8C9", check=False)
    assert bad.returncode == 1 and "4 or 7 bytes" in bad.stderr


@pytest.mark.slow
def test_camera_qr_left_in_view_is_one_use_until_it_has_left(daemon, hwsim):
    wait_for(lambda: _feature(daemon, "qr")["reader"] == "ok", timeout=30, what="QR reader up")
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = daemon.ctl_json("tempkey", "create", "--name", "Delivery", "--doors", "1", "--end", end, "--count", "3")
    hwsim.cmd("camera", "qr", key["qr"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised by QR")
    # The code stays in view, for many qr_cooldowns (1 s): the camera goes idle with it still there (a still
    # picture: no full frame is decoded any more) and the reader still takes it as the same presentation.
    opened = _feature(daemon, "camera")["frames"]  # stats come every few seconds: wait for ones taken after this
    idle = wait_for(lambda: (f := _feature(daemon, "camera"))["active"] is False and f["frames"] > opened and f,
                    timeout=30, interval=0.5, what="the camera idle with the code in view")
    wait_for(lambda: _feature(daemon, "camera")["frames"] >= idle["frames"] + 30, timeout=30, interval=0.5,
             what="30 more frames received")
    assert _feature(daemon, "camera")["published"] == idle["published"]  # none fully decoded while idle
    assert _feature(daemon, "qr")["qr_in_view"] == 1
    assert daemon.ctl_json("tempkey", "show", key["id"])["uses"] == {"1": 1}  # one use, not one per cooldown
    hwsim.cmd("camera", "clear")
    wait_for(lambda: _feature(daemon, "qr")["qr_in_view"] == 0, timeout=10, what="the code to have left")
    hwsim.cmd("camera", "qr", key["qr"])  # shown again: a second presentation
    wait_for(lambda: daemon.ctl_json("tempkey", "show", key["id"])["uses"] == {"1": 2}, timeout=10,
             what="the second use")
    hwsim.cmd("camera", "qr", "https://example.com/not-a-key")  # a different code counts at once
    entries = access_entries(daemon, 3)
    assert [(e["credential"], e["granted"], e["reason"]) for e in reversed(entries)] == [
        ("qr", True, "granted"), ("qr", True, "granted"), ("qr", False, "malformed")]
    assert entries[0]["detail"]["detail"] == "QR code of another format, not a doorphone temp key"
    assert daemon.ctl_json("tempkey", "show", key["id"])["uses"] == {"1": 2}
    hwsim.cmd("camera", "clear")


@pytest.mark.slow
def test_nfc_card_held_on_the_reader_is_one_presentation_until_it_has_left(daemon_factory, hwsim):
    d = daemon_factory(env={"DOORPHONED_NFC_REPEAT_DELAY": "4"})  # > hw-sim's ~1 s poll on a loaded machine
    d.start()
    uid = d.ctl_json("user", "add", "Erin", "--doors", "1")["id"]
    d.ctl("card", "add", uid, "04A1B2C3")
    held = json.loads(_hwsim_raw(hwsim, {"op": "nfc_tap", "uid": "04A1B2C3", "hold": 8, "timeout": 8}))
    assert held["ok"] and held["reads"] >= 3, held  # the reader read it again and again while it lay there
    assert [e["granted"] for e in access_entries(d, 1)] == [True]
    assert len(d.door_log(kind="access")) == 1
    wait_for(lambda: _feature(d, "nfc")["cards_in_field"] == 0, timeout=10, what="the card to have left")
    hwsim.cmd("nfc", "tap", "04A1B2C3")
    assert [e["granted"] for e in access_entries(d, 2)] == [True, True]


def _hwsim_raw(hwsim, request: dict) -> str:
    control, replies = hwsim.control()
    with control:
        control.sendall(json.dumps(request).encode() + b"\n")
        return replies.readline().decode()


def test_camera_stream_lost_degrades_only_the_camera(daemon, hwsim):
    wait_for(lambda: _feature(daemon, "qr")["reader"] == "ok", timeout=30, what="QR reader up")
    hwsim.cmd("camera", "off")
    status = wait_for(lambda: (f := _feature(daemon, "qr"))["reader"] == "fault" and f, timeout=20,
                      what="QR reader fault")
    assert "camera" in status["reader_error"] or "stream" in status["reader_error"]
    assert _feature(daemon, "camera")["camera"] == "fault"
    add_user_with_pin(daemon, "Alice", "2580")
    keypad(hwsim, "2580#")  # the keypad is unaffected
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay via keypad")
    hwsim.cmd("camera", "on")
    wait_for(lambda: _feature(daemon, "qr")["reader"] == "ok", timeout=30, what="camera back")


def test_camera_process_crash_is_contained_and_dies_with_the_daemon(daemon, hwsim):
    first = wait_for(lambda: (f := _feature(daemon, "camera"))["camera"] == "ok" and f["process_pid"], timeout=30,
                     what="camera process")
    os.kill(first, signal.SIGKILL)  # a decoder crash
    second = wait_for(lambda: (f := _feature(daemon, "camera"))["camera"] == "ok" and f["process_pid"] != first
                      and f["process_pid"], timeout=60, what="camera process restarted")
    wait_for(lambda: _feature(daemon, "qr")["reader"] == "ok", timeout=30, what="QR reader back")
    assert daemon.ctl_json("status")["pid"] == daemon.proc.pid  # the daemon itself never noticed more
    daemon.kill()
    wait_for(lambda: not Path(f"/proc/{second}").exists(), timeout=30, what="camera process gone with the daemon")


def test_png_shown_to_the_camera_opens(daemon, hwsim, tmp_path):
    """The installer's PNG (tempkey qr --png), held up to the camera as a picture, opens the door."""
    wait_for(lambda: _feature(daemon, "qr")["reader"] == "ok", timeout=30, what="QR reader up")
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = daemon.ctl_json("tempkey", "create", "--name", "Printed", "--doors", "1", "--end", end)
    png = tmp_path / "printed.png"
    daemon.ctl("tempkey", "qr", key["id"], "--png", str(png))
    hwsim.cmd("camera", "show", str(png))
    wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=20, what="relay 1 energised by the printed QR")
    assert access_entries(daemon, 1)[0]["key_id"] == key["id"]


def test_control_socket_fuzz_never_breaks_the_daemon(daemon):
    """Random argument objects for every credential command: always a clean answer, never an internal error."""
    import socket as sock_module

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                          | st.text(max_size=40), lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
    keys = st.sampled_from(["user", "id", "name", "pin", "uid", "doors", "door", "qr", "card", "at", "start",
                            "end", "repeat", "from", "to", "days", "count", "schedule", "enabled", "limit"])
    commands = st.sampled_from(["user.add", "user.show", "user.remove", "pin.set", "card.add", "card.remove",
                                "tempkey.create", "tempkey.show", "tempkey.remove", "tempkey.qr", "access.check",
                                "user.list", "tempkey.list", "log.doors", "relay.open"])
    conn = sock_module.socket(sock_module.AF_UNIX)
    conn.connect(str(daemon.socket))
    replies = conn.makefile("rb")

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(commands, st.dictionaries(keys, values, max_size=6))
    def fuzz(cmd, args):
        conn.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        reply = json.loads(replies.readline())
        assert "internal error" not in reply.get("error", ""), (cmd, args, reply)

    fuzz()
    conn.close()
    assert daemon.ctl_json("status")["pid"] == daemon.proc.pid
    assert "Traceback" not in daemon.log_text()
