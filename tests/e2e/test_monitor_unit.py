"""The monitor stream hosted by the unit: daemon + camera process + hw-sim's camera scene, real RTSP clients.

hw-sim's camera draws its stamp (``hwsim camera stamp on``): a frame decoded from the daemon's stream that
carries it came from hw-sim's scene through the unit's capture, hub and encoder.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from tests.ports import free_port
from tests.procs import wait_for
from tests.rtsp import PASSWORD, RawRtsp, open_viewer, read_stamps


def monitor_env(port: int, **extra: str) -> dict[str, str]:
    return {"DOORPHONED_MONITOR_ENABLED": "true", "DOORPHONED_MONITOR_PORT": str(port),
            "DOORPHONED_MONITOR_HOST": "127.0.0.1", "DOORPHONED_MONITOR_PUBLIC_HOST": "127.0.0.1",
            "DOORPHONED_MONITOR_PASSWORD": PASSWORD, **extra}


def _camera(d) -> dict:
    return next(f for f in d.ctl_json("status")["features"] if f["name"] == "camera")


def start_unit(daemon_factory, **extra: str):
    port = free_port()
    d = daemon_factory(env=monitor_env(port, **extra))
    d.start()
    wait_for(lambda: _camera(d).get("monitor", {}).get("state") == "ok", timeout=60, interval=0.3,
             what="monitor stream up")
    return d, port


def test_the_units_stream_shows_hwsims_scene_and_a_wrong_password_gets_401(daemon_factory, hwsim):
    hwsim.cmd("camera", "stamp", "on")
    d, port = start_unit(daemon_factory)
    capture = open_viewer(f"rtsp://installer:{PASSWORD}@127.0.0.1:{port}/live/ch00_0")
    try:
        assert capture.isOpened(), d.log_text()[-2000:]
        status = wait_for(lambda: (s := d.ctl_json("monitor", "status"))["viewers"] and s, timeout=20,
                          what="the viewer listed")
        stamps = [value for value, _ in read_stamps(capture, 30) if value is not None]
    finally:
        capture.release()
    assert len(stamps) >= 10, stamps  # hw-sim's stamped scene, not a synthetic picture
    assert status["viewers"][0]["purpose"] == "installer"
    assert status["encoder"]["fps"] > 0 and status["encoder"]["bitrate_bps"] > 0
    bad = RawRtsp(port, "installer", "wrong")
    assert bad.request("DESCRIBE")[0] == 401
    bad.close()
    out = d.ctl("monitor", "status").stdout + d.ctl("config", "show").stdout + d.log_text()
    assert PASSWORD not in out


def test_the_camera_is_held_active_while_watched_and_idles_after(daemon_factory, hwsim):
    # GStreamer's warnings into the log (its init line shows the setting reached the camera process)
    d, port = start_unit(daemon_factory, GST_DEBUG="*:2,GST_INIT:4", GST_DEBUG_NO_COLOR="1")
    viewer = RawRtsp(port, "installer", PASSWORD)
    assert viewer.play() == 200
    assert viewer.rtp_packets(20) == 20
    pipeline = d.ctl_json("monitor", "status")["pipeline"]  # where frames stop, should a viewer get none
    assert pipeline["frames_pushed"] > 0 and pipeline["frames_encoded"] > 0 and pipeline["packets_sent"] >= 20
    assert pipeline["restarts"] == 0
    assert "pipeline:" in d.ctl("monitor", "status").stdout
    wait_for(lambda: "monitor" in _camera(d)["held_by"], timeout=30, interval=0.5, what="camera held by monitor")
    viewer.close()
    wait_for(lambda: "monitor" not in _camera(d)["held_by"] and _camera(d)["monitor"]["viewers"] == 0,
             timeout=30, interval=0.5, what="hold released")
    log = d.log_text()
    assert "Initializing GStreamer Core Library" in log
    assert "please add queues" not in log  # issue 11: the pipeline that could stall a fresh stream


def test_qr_codes_still_open_doors_while_four_viewers_watch(daemon_factory, hwsim):
    d, port = start_unit(daemon_factory)
    viewers = [RawRtsp(port, "installer", PASSWORD) for _ in range(4)]
    try:
        for viewer in viewers:
            assert viewer.play() == 200
        fifth = RawRtsp(port, "installer", PASSWORD)  # the viewer limit (4): the next is refused
        assert fifth.request("DESCRIBE")[0] == 503
        fifth.close()
        end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        key = d.ctl_json("tempkey", "create", "--name", "Visitor", "--doors", "1", "--end", end, "--count", "5")
        hwsim.cmd("camera", "qr", key["qr"])
        wait_for(lambda: hwsim.relay(1)["energise_count"] >= 1, timeout=30, what="relay 1 energised by QR")
        assert all(v.rtp_packets(5) == 5 for v in viewers)
        assert len(d.ctl_json("monitor", "status")["viewers"]) == 4
    finally:
        for viewer in viewers:
            viewer.close()


def test_a_new_viewer_gets_key_frames_at_once_and_again_within_its_first_second(daemon_factory, hwsim):
    """A player that probes the stream before it decodes (FFmpeg with nobuffer) drops the key frame sent at
    PLAY; without the follow-ups it waited for the scheduled one (2 s: first frame at 2.3 s in the bench)."""
    _unit, port = start_unit(daemon_factory)
    watcher = RawRtsp(port, "installer", PASSWORD)  # the stream runs already: a new viewer joins it
    assert watcher.play() == 200 and watcher.rtp_packets(20) == 20
    viewer = RawRtsp(port, "installer", PASSWORD)
    assert viewer.play() == 200
    keys = viewer.key_frames_in(30)  # 30 frames: 2 s at 15 fps, one scheduled key frame at most
    watcher.close()
    viewer.close()
    assert keys and keys[0] <= 2, keys  # it starts at a key frame ...
    assert len(keys) >= 3, keys  # ... and gets more while a probing player may still be starting


def test_a_taken_port_is_a_loud_monitor_fault_and_doors_still_work(daemon_factory, hwsim):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = daemon_factory(env=monitor_env(port))
        d.start()
        state = wait_for(lambda: (m := _camera(d).get("monitor", {}))["state"] == "fault" and m, timeout=60,
                         interval=0.3, what="monitor fault")
        assert "port" in state["error"]
        assert "monitor fault" in d.log_text()
        refused = d.ctl("monitor", "status", check=False)
        assert refused.returncode == 0 and "FAULT" in refused.stdout and "port taken" in refused.stdout
        d.ctl("relay", "open", "1")
        assert hwsim.relay(1)["energise_count"] >= 1


def test_monitor_status_without_the_monitor_fails_loudly(daemon):
    result = daemon.ctl("monitor", "status", check=False)
    assert result.returncode != 0 and "not enabled" in (result.stderr + result.stdout)


@pytest.mark.slow
def test_cloud_monitor_start_gives_a_url_for_one_session_capped_and_stop_revokes(daemon_factory, broker, hwsim):
    from tests.mqtt import cloud_send

    port = free_port()
    d = daemon_factory(env={**broker.env("unit-b"), **monitor_env(port)})
    d.start()
    wait_for(lambda: d.ctl_json("cloud", "status")["connected"], timeout=20, what="cloud connected")
    wait_for(lambda: _camera(d).get("monitor", {}).get("state") == "ok", timeout=60, interval=0.3,
             what="monitor stream up")
    from tests.mqtt import Client

    watcher = Client(broker, "cloud")
    watcher.subscribe("doorphone/v1/unit-b/state")

    def retained_monitor() -> list[dict]:
        return [s["monitor"] for s in watcher.json_messages("doorphone/v1/unit-b/state") if "monitor" in s]

    code, reply, err = cloud_send(broker, "unit-b", "monitor.start", {"cap": 5})
    assert code == 0 and reply["ok"], (reply, err)
    grant = reply["result"]
    assert grant["cap_seconds"] == 5 and grant["url"].startswith("rtsp://s-") and f":{port}/" in grant["url"]
    first = RawRtsp.from_url(grant["url"])
    assert first.play() == 200 and first.rtp_packets(5) == 5
    second = RawRtsp.from_url(grant["url"])  # one session: a second client with the same URL is refused
    assert second.request("DESCRIBE")[0] == 401
    second.close()
    watching = wait_for(lambda: [m for m in retained_monitor() if m["viewers"] == 1], timeout=20,
                        what="retained state with one viewer")[-1]
    assert watching["state"] == "ok" and set(watching["encoder"]) == {"fps", "bitrate_bps"}
    assert first.closed_within(30)  # the cap (5 s) ended the session
    wait_for(lambda: retained_monitor()[-1]["viewers"] == 0, timeout=20, what="retained state: no viewer")
    watcher.close()
    first.close()
    again = RawRtsp.from_url(grant["url"])
    assert again.request("DESCRIBE")[0] == 401
    again.close()
    # stop: a live grant is revoked (its viewer disconnected); an unknown id is a clear refusal
    code, reply, _ = cloud_send(broker, "unit-b", "monitor.start", {})
    fresh = reply["result"]
    assert fresh["cap_seconds"] == 180
    viewer = RawRtsp.from_url(fresh["url"])
    assert viewer.play() == 200  # the camera idled meanwhile: the new viewer's SETUP wakes it (preroll)
    code, reply, _ = cloud_send(broker, "unit-b", "monitor.stop", {"session": fresh["session"]})
    assert reply["ok"] and reply["result"]["revoked"] is True, reply
    assert viewer.closed_within(30)
    viewer.close()
    code, reply, _ = cloud_send(broker, "unit-b", "monitor.stop", {"session": fresh["session"]})
    assert reply["ok"] is False and "no live monitor session" in reply["error"]
    for bad in ({"cap": 0}, {"cap": "x"}, {"cap": 10**9}, {"cap": float("nan")}):
        code, reply, _ = cloud_send(broker, "unit-b", "monitor.start", bad)
        assert reply["ok"] is False, bad
    assert PASSWORD not in d.log_text() and fresh["url"] not in d.log_text()


def test_a_callee_gets_a_monitor_url_in_the_invite_that_works_during_the_call_and_401_after(
        daemon_factory, hwsim, tmp_path):
    import re

    from tests.e2e.test_sip import target_env, uas
    from tests.sipp import sip_env, uas_answer_scenario, wait_sip_up

    callee = uas(tmp_path, "app", uas_answer_scenario(delay_ms=300))
    port = free_port()
    d = daemon_factory(env=sip_env(**monitor_env(port), **target_env("app", app=[("app", callee)])))
    d.start()
    wait_sip_up(d)
    wait_for(lambda: _camera(d).get("monitor", {}).get("state") == "ok", timeout=60, interval=0.3,
             what="monitor stream up")
    assert d.ctl_json("call", "Reception")["called"]
    wait_for(lambda: callee.requests("ACK") == 1, timeout=20, what="callee answered")
    [url] = re.findall(r"^X-Monitor-URL: (\S+)\s*$", callee.messages(), re.MULTILINE)
    assert url.startswith("rtsp://s-") and f"127.0.0.1:{port}/live/ch00_0" in url
    viewer = RawRtsp.from_url(url)
    assert viewer.play() == 200 and viewer.rtp_packets(5) == 5  # works during the call
    assert d.ctl_json("monitor", "status")["viewers"][0]["purpose"] == "call"
    assert d.ctl_json("hangup")["calls_ended"] == 1
    assert callee.wait() == 0
    assert viewer.closed_within(30)  # the call ended: its grant revoked, its viewer disconnected
    viewer.close()
    again = RawRtsp.from_url(url)
    assert again.request("DESCRIBE")[0] == 401
    again.close()
    assert url not in d.log_text()
