"""SIP calls end to end: the real daemon on hw-sim, real sipp (Debian sip-tester) as every far end."""

from __future__ import annotations

import pytest

from tests.procs import wait_for
from tests.sipp import Sipp, sip_env, uac_scenario


@pytest.fixture
def sip_daemon(daemon_factory):
    def make(**env: str):
        d = daemon_factory(env=sip_env(DOORPHONED_DOORS_1_HOLD_TIME="1", **env))
        d.start()
        d.sip_target = f"127.0.0.1:{d.extra_env['DOORPHONED_SIP_PORT']}"
        return d
    return make


def uac(tmp_path, d, name: str, scenario: str, *extra: str, ip: str = "127.0.0.1") -> Sipp:
    return Sipp(tmp_path, name, scenario, d.sip_target, "-m", "1", "-timeout", "20s", "-timeout_error",
                *extra, ip=ip).start()


def calls(d) -> list[dict]:
    return d.ctl_json("log", "calls")


def test_rfc2833_code_opens_door_1_and_the_call_is_logged(sip_daemon, hwsim, tmp_path):
    d = sip_daemon()
    assert uac(tmp_path, d, "dtmf", uac_scenario("#", hold_ms=800)).wait() == 0
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=5, what="relay 1 energised")
    assert hwsim.relay(2)["energise_count"] == 0
    [entry] = d.door_log(kind="access")
    assert (entry["credential"], entry["door"], entry["granted"]) == ("dtmf", 1, True)
    assert entry["subject"] == "call with sip:sipp@127.0.0.1"
    assert entry["detail"]["detail"] == "opened during call with sip:sipp@127.0.0.1 (relay 1)"
    [call] = wait_for(lambda: calls(d), what="call history entry")
    assert (call["type"], call["direction"], call["peer"], call["opened"]) == ("incoming", "in", "sip:sipp@127.0.0.1", [1])
    assert call["answered"] and 0.5 < call["duration_s"] < 5
    assert call["quality"]["codec"] == "PCMA/8000" and call["quality"]["rx_packets"] > 0


def test_wrong_code_opens_nothing_and_sip_info_opens(sip_daemon, hwsim, tmp_path):
    d = sip_daemon()
    assert uac(tmp_path, d, "wrong", uac_scenario("12*", hold_ms=300)).wait() == 0
    wait_for(lambda: len(calls(d)) == 1, what="first call logged")
    assert hwsim.relay(1)["energise_count"] == 0 and d.door_log(kind="access") == []
    assert uac(tmp_path, d, "info", uac_scenario("1#", method="info", hold_ms=300)).wait() == 0
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=5, what="relay 1 energised by SIP INFO")
    assert [e["credential"] for e in d.door_log(kind="access")] == ["dtmf"]


def test_caller_that_is_not_an_allowed_peer_gets_403(sip_daemon, hwsim, tmp_path):
    d = sip_daemon()
    stranger = uac(tmp_path, d, "stranger", uac_scenario("#", expect="403"), ip="127.0.0.2")
    assert stranger.wait() == 0
    assert "refused call from 127.0.0.2" in wait_for(lambda: "refused call" in d.log_text() and d.log_text(),
                                                     what="refusal in the log")
    assert hwsim.relay(1)["energise_count"] == 0 and calls(d) == []
    status = d.ctl_json("status")
    [sip] = [f["sip"] for f in status["features"] if "sip" in f]
    assert sip["rejected"] == 1 and sip["running"]
