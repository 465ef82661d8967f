"""The monitor stream's access rules as pure logic (the RTSP side is in tests/e2e/test_monitor.py)."""

from __future__ import annotations

import pytest

from doorphoned.camera import monitor
from doorphoned.camera.hub import FrameHub
from doorphoned.camera.monitor_auth import Access, AccessError, check_cap, check_purpose


def url_for(user: str, password: str) -> str:
    return f"rtsp://{user}:{password}@unit:8554/live/ch00_0"


def test_a_grant_binds_to_the_first_client_and_is_spent_when_it_leaves():
    access = Access(max_viewers=2, grant_ttl=60)
    grant = access.new_grant("call", 30, url_for)
    first, second = object(), object()
    assert access.may_use(grant.user, first) and access.may_use(grant.user, second)
    viewer = access.admit(first, grant.user, "10.0.0.5", installer_cap=0)
    assert viewer.purpose == "call" and viewer.cap_seconds == 30 and viewer.grant is grant
    assert access.may_use(grant.user, first) and not access.may_use(grant.user, second)
    access.leave(first)
    assert grant.spent and not access.may_use(grant.user, first)
    assert grant.user not in access.grants


def test_grants_are_random_and_carry_their_credential_in_the_url():
    access = Access(max_viewers=2, grant_ttl=60)
    a, b = access.new_grant("cloud", 180, url_for), access.new_grant("cloud", 180, url_for)
    assert a.user != b.user and a.password != b.password and len(a.password) >= 24
    assert f"{a.user}:{a.password}@" in a.url


def test_the_viewer_limit_counts_admitted_clients_only():
    access = Access(max_viewers=1, grant_ttl=60)
    first, second = object(), object()
    assert not access.full(first)
    access.admit(first, "installer", "10.0.0.5", installer_cap=0)
    assert not access.full(first) and access.full(second)
    access.leave(first)
    assert not access.full(second)


def test_no_user_may_not_and_the_installer_may():
    access = Access(max_viewers=1, grant_ttl=60)
    assert not access.may_use(None, object())
    assert access.may_use("installer", object())
    assert not access.may_use("s-unknown", object())  # a grant name that was never issued (or is spent)


@pytest.mark.parametrize("purpose", ["", "x" * 65, "call\u202e", "a\x00", 5, None, "caf\u00e9"])
def test_bad_purposes_are_refused(purpose):
    with pytest.raises(AccessError):
        check_purpose(purpose)


@pytest.mark.parametrize("cap", [0, -1, 3601, True, 1.5, float("nan"), "60", None])
def test_bad_caps_are_refused(cap):
    with pytest.raises(AccessError):
        check_cap(cap, 3600)


def test_start_fails_loudly_when_an_element_is_missing(monkeypatch):
    monkeypatch.setattr(monitor, "ELEMENTS", (*monitor.ELEMENTS, "doorphone-no-such-element"))
    server = monitor.MonitorServer(FrameHub(), monitor.MonitorSettings(port=0))
    with pytest.raises(monitor.MonitorError, match="doorphone-no-such-element"):
        server.start()


class FakeAppsrc:
    def __init__(self, gst):
        self.gst, self.buffers = gst, []

    def get_state(self, _timeout):
        return self.gst.StateChangeReturn.SUCCESS, self.gst.State.PLAYING, self.gst.State.VOID_PENDING

    def emit(self, _signal, buffer):
        self.buffers.append(buffer.get_size())
        return self.gst.FlowReturn.OK


@pytest.mark.parametrize(("source_fps", "expected"), [(30, 15), (15, 30)])
def test_the_producer_thins_a_faster_source_to_the_stream_fps(source_fps, expected):
    import numpy as np

    from doorphoned.core.frames import Frame
    from tests.procs import wait_for

    gst = monitor._gi().gst
    hub, appsrc = FrameHub(), FakeAppsrc(gst)
    producer = monitor.Producer(hub, appsrc, monitor.MonitorSettings(width=64, height=48, fps=15), gst)
    producer.start()
    image = np.zeros((96, 128, 3), np.uint8)  # another size than the stream's: scaled
    try:
        for seq in range(30):  # one second of the source's frames at their capture instants
            wait_for(lambda: hub.subscribers and all(m._frame is None for m in hub.subscribers), what="taken")
            hub.publish(Frame(seq, 100 + seq / source_fps, image.copy()))
        wait_for(lambda: all(m._frame is None for m in hub.subscribers), what="last frame taken")
    finally:
        producer.stop()
    assert len(appsrc.buffers) == expected
    assert set(appsrc.buffers) == {64 * 48 * 3}
