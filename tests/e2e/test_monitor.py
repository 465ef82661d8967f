"""The live monitor stream end to end: a real RTSP server process (the synthetic host), real clients
(OpenCV/FFmpeg and a raw RTSP connection that sees exact status codes)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.procs import ROOT, wait_for
from tests.rtsp import PASSWORD, MonitorHost, RawRtsp, open_viewer, read_stamps


@pytest.fixture
def monitor(tmp_path):
    host = MonitorHost(tmp_path, "--max-viewers", "2")
    host.start()
    yield host
    host.stop()


def test_viewer_decodes_frames_that_carry_the_stamp(monitor):
    capture = open_viewer(monitor.url())
    try:
        assert capture.isOpened(), monitor.log.read_text()[-2000:]
        stamps = [value for value, _ in read_stamps(capture, 30) if value is not None]
    finally:
        capture.release()
    assert len(stamps) >= 20, stamps
    assert sorted(stamps) == stamps and len(set(stamps)) > 15  # moving time, not one frozen frame


def test_installer_account_plays_and_a_wrong_password_gets_401(monitor):
    good = RawRtsp(monitor.port, "installer", PASSWORD)
    assert good.play() == 200
    assert good.rtp_packets(10) == 10, monitor.request("status")
    good.close()
    for user, password in (("installer", "wrong"), ("nobody", PASSWORD), (None, None)):
        bad = RawRtsp(monitor.port, user, password)
        assert bad.request("DESCRIBE")[0] == 401
        bad.close()


def test_a_grant_serves_one_session_then_401(monitor):
    grant = monitor.request("issue_session", purpose="cloud", cap_seconds=60)["grant"]
    first = RawRtsp.from_url(grant["url"])
    assert first.play() == 200
    assert first.rtp_packets(5) == 5
    other = RawRtsp.from_url(grant["url"])  # the same credential, a second viewer: refused while it plays
    assert other.request("DESCRIBE")[0] == 401
    other.close()
    first.close()
    wait_for(lambda: not monitor.request("viewers")["viewers"], what="first viewer gone")
    again = RawRtsp.from_url(grant["url"])  # spent: digest itself fails now
    assert again.request("DESCRIBE")[0] == 401
    again.close()
    assert "password" not in monitor.log.read_text() and grant["password"] not in monitor.log.read_text()


def test_the_session_cap_ends_a_viewer(monitor):
    grant = monitor.request("issue_session", purpose="cloud", cap_seconds=3)["grant"]
    viewer = RawRtsp.from_url(grant["url"])
    assert viewer.play() == 200
    assert viewer.rtp_packets(3) == 3
    assert viewer.closed_within(30), "the server kept the viewer past its cap"
    wait_for(lambda: not monitor.request("viewers")["viewers"], what="capped viewer gone")


def test_the_viewer_limit_refuses_the_next_one_with_503(monitor):
    watching = [RawRtsp(monitor.port, "installer", PASSWORD) for _ in range(2)]
    for viewer in watching:
        assert viewer.play() == 200
    third = RawRtsp(monitor.port, "installer", PASSWORD)
    assert third.play() == 503
    assert len(monitor.request("viewers")["viewers"]) == 2
    watching[0].close()
    wait_for(lambda: len(monitor.request("viewers")["viewers"]) == 1, what="a place free")
    assert RawRtsp(monitor.port, "installer", PASSWORD).play() == 200


def test_revoke_disconnects_the_viewer_and_kills_the_credential(monitor):
    grant = monitor.request("issue_session", purpose="call", cap_seconds=120)["grant"]
    viewer = RawRtsp.from_url(grant["url"])
    assert viewer.play() == 200
    assert viewer.rtp_packets(3) == 3
    assert monitor.request("revoke", id=grant["id"]) == {"ok": True}
    assert viewer.closed_within(30)
    assert RawRtsp.from_url(grant["url"]).request("DESCRIBE")[0] == 401
    assert monitor.request("revoke", id=grant["id"])["ok"] is False  # gone: said, not ignored


def test_viewers_report_quality_from_rtcp_receiver_reports(monitor):
    grant = monitor.request("issue_session", purpose="cloud", cap_seconds=120)["grant"]
    capture = open_viewer(grant["url"], transport="udp")  # FFmpeg sends receiver reports over UDP only
    try:
        assert capture.isOpened()
        reader_frames = read_stamps(capture, 15)
        assert len(reader_frames) == 15, monitor.request("status")  # where the frames stopped

        def reported():
            for _ in range(8):  # keep decoding so the viewer keeps reporting
                capture.read()
            viewers = monitor.request("viewers")
            entry = viewers["viewers"][0]
            return (entry, viewers["encoder"]) if entry["rtcp"] and entry["fps"] else None
        entry, encoder = wait_for(reported, timeout=60, what="an RTCP receiver report")
    finally:
        capture.release()
    assert entry["purpose"] == "cloud" and entry["transport"] == "udp" and entry["remote"] == "127.0.0.1"
    assert entry["cap_seconds"] == 120 and entry["grant"] == grant["id"]
    assert entry["fps"] > 3 and entry["bitrate_bps"] > 10_000
    assert 0 <= entry["packet_loss"] <= 0.2 and 0 <= entry["rtt_ms"] < 1000
    assert encoder["fps"] > 5 and encoder["bitrate_bps"] > 10_000


def test_bad_control_requests_are_answered_and_change_nothing(monitor):
    for line in ('{"op": "issue_session", "purpose": "x\\u202e", "cap_seconds": 5}',
                 '{"op": "issue_session", "purpose": "cloud", "cap_seconds": NaN}',
                 '{"op": "issue_session", "purpose": "cloud", "cap_seconds": 1e9}',
                 '{"op": "issue_session", "purpose": "cloud", "cap_seconds": true}',
                 '{"op": "revoke", "id": 5}', '{"op": "revoke", "id": "nope"}', '{"op": "launch"}',
                 '{"op": "viewers", "op": "revoke"}', "[" * 5000, "not json", "\x00"):
        reply = monitor.raw(line)
        assert reply["ok"] is False and reply["error"], (line, reply)
    assert monitor.request("viewers")["viewers"] == []
    assert RawRtsp(monitor.port, "installer", PASSWORD).play() == 200


def test_start_fails_loudly_when_the_port_is_taken(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "doorphoned.camera.monitor", "--synthetic", "--port", str(port)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, cwd=ROOT)
    taken.close()
    assert result.returncode != 0
    assert "port taken" in result.stderr


def test_a_tcp_viewer_quality_is_what_its_receiver_reports_say(monitor):
    viewer = RawRtsp(monitor.port, "installer", PASSWORD)
    assert viewer.play() == 200

    def reported():
        viewer.rtp_packets(20)
        viewer.send_receiver_report(fraction_lost=64, cumulative_lost=42)
        entry = monitor.request("viewers")["viewers"][0]
        return entry if entry["rtcp"] and entry["packets_lost"] == 42 else None
    entry = wait_for(reported, timeout=60, what="the TCP receiver report in viewers()")
    viewer.close()
    assert entry["transport"] == "tcp" and entry["purpose"] == "installer"
    assert entry["packet_loss"] == 0.25  # 64/256, as reported
    assert entry["rtt_ms"] >= 0


def test_an_unused_grant_expires(tmp_path):
    host = MonitorHost(tmp_path, "--grant-ttl", "2")
    host.start()
    try:
        grant = host.request("issue_session", purpose="cloud", cap_seconds=60)["grant"]
        wait_for(lambda: "expired unused" in host.log.read_text(), timeout=30, what="grant expiry")
        assert RawRtsp.from_url(grant["url"]).request("DESCRIBE")[0] == 401
        assert PASSWORD not in host.log.read_text() and grant["password"] not in host.log.read_text()
    finally:
        host.stop()


def test_the_encoder_runs_only_while_watched(monitor):
    viewer = RawRtsp(monitor.port, "installer", PASSWORD)
    assert viewer.play() == 200
    viewer.rtp_packets(30)
    wait_for(lambda: monitor.request("viewers")["encoder"]["fps"] > 0, what="the encoder running")
    viewer.request("TEARDOWN")
    viewer.close()
    wait_for(lambda: monitor.request("viewers")["encoder"] == {"fps": 0.0, "bitrate_bps": 0}, timeout=30,
             what="the encoder stopped after the last viewer left")


def test_an_authorization_header_that_is_not_utf8_gets_400(monitor):
    """Found by the RTSP fuzz: PyGObject raised UnicodeDecodeError reading such a header in the handler."""
    sock = socket.create_connection(("127.0.0.1", monitor.port), timeout=30)
    sock.sendall(b"DESCRIBE rtsp://127.0.0.1:1/live/ch00_0 RTSP/1.0\r\nCSeq: 1\r\n"
                 b'Authorization: Digest username="\xed\xa0\x80"\r\n\r\n')
    assert sock.recv(4096).startswith(b"RTSP/1.0 400")
    sock.close()
    assert RawRtsp(monitor.port, "installer", PASSWORD).play() == 200
    assert monitor.alive() and "Traceback" not in monitor.log.read_text()
