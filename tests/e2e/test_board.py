"""A relay board that stops answering (hw-sim killed): every open is a reported lock fault, states are
unknown, and all is known again once the board is back."""

from __future__ import annotations

from collections.abc import Callable

from doorphoned.readers.base import BACKOFF_MAX as READER_BACKOFF_MAX
from tests.dates import from_now
from tests.mqtt import cloud_send
from tests.procs import HwSim, wait_for
from tests.sipp import wait_sip_up


def _readers_up(d) -> Callable[[], bool]:
    return lambda: all(f.get("reader", "ok") == "ok" for f in d.ctl_json("status")["features"])


def _doors_feature(d) -> dict:
    return next(f for f in d.ctl_json("status")["features"] if f["name"] == "doors")


def test_lost_board_every_open_is_a_lock_fault_until_it_is_back(tmp_path, daemon_factory, hwsim, broker):
    # The keypad on a second hw-sim: it keeps working while the GPIO board (the first) is gone.
    (tmp_path / "keys").mkdir()
    keys = HwSim(tmp_path / "keys" / "hwsim.sock")
    keys.start()
    try:
        d = daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_DOORS_1_HOLD_TIME": "1",
                                "DOORPHONED_KEYPAD_PORT": str(keys.keypad_link)})
        d.start()
        wait_for(lambda: d.call("cloud.status")["connected"], timeout=30, what="cloud connected")
        key = d.ctl_json("tempkey", "create", "--name", "Plumber", "--doors", "1", "--end", from_now(days=1),
                         "--count", "2")
        hwsim.proc.kill()  # the board is gone
        hwsim.proc.wait(10)
        wait_for(lambda: _doors_feature(d)["hardware_connected"] is False, timeout=30, what="the board seen as lost")
        status = d.ctl_json("status")
        assert {(x["state"], x["door_status"]) for x in status["doors"]} == {("unknown", "unknown")}
        assert status["tamper"] == "unknown" and "LOST" in d.ctl("status").stdout

        opened = d.ctl("relay", "open", "1", check=False)
        assert opened.returncode == 1 and "door 1: not opened" in opened.stderr
        assert "not reachable" in opened.stderr and "opened" not in opened.stdout
        _, reply, _ = cloud_send(broker, "unit-b", "open_door", {"door": 1})
        assert reply["ok"] is False and "not opened" in reply["error"], reply
        keys.cmd("keypad", key["pin"] + "#")
        entries = wait_for(lambda: len(e := d.door_log(kind="access")) >= 3 and e, timeout=30,
                           what="3 access entries")
        assert [(e["credential"], e["granted"], e["reason"]) for e in reversed(entries)] == [
            ("installer", False, "lock_fault"), ("remote", False, "lock_fault"), ("pin", False, "lock_fault")]
        assert entries[0]["detail"]["lock_fault"] == "board_unreachable" and entries[0]["detail"]["use_refunded"]
        assert len(d.door_log(kind="lock_fault")) == 3
        assert d.ctl_json("tempkey", "show", key["id"])["uses"].get("1", 0) == 0  # the use was given back
        doctor = d.ctl("doctor", check=False)
        assert doctor.returncode == 2 and "FAIL  door 1 lock" in doctor.stdout
        assert "FAIL  door 1 sensor" in doctor.stdout

        hwsim.socket.unlink()  # left behind by the kill -9; start() waits for hw-sim's new one
        hwsim.start()  # the board is back: the factory reconnects and replays the safe state
        wait_for(lambda: _doors_feature(d)["hardware_connected"], timeout=30, what="the board back")
        door1 = next(x for x in d.ctl_json("status")["doors"] if x["door"] == 1)
        assert (door1["state"], door1["door_status"], door1["fault"]) == ("locked", "closed", "")
        assert hwsim.relay(1)["energise_count"] == 0  # no late open when the board came back
        keys.cmd("keypad", key["pin"] + "#")
        wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=30, what="relay 1 opened by the key")
        assert d.ctl_json("tempkey", "show", key["id"])["uses"] == {"1": 1}
        wait_sip_up(d)  # doctor checks SIP too, whose process starts after READY
        # ... and the readers. The camera and NFC link live in the same hw-sim as the board here: the camera
        # reader retried with backoff while it was away (up to BACKOFF_MAX = 30 s between tries), so on a
        # loaded machine it may still be waiting when the board is back; its next try finds the camera.
        wait_for(_readers_up(d), timeout=READER_BACKOFF_MAX + 30, interval=0.5, what="every reader up again")
        assert d.ctl("doctor").returncode == 0
    finally:
        keys.stop()
