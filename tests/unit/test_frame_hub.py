"""The frame hub: a slow consumer drops frames, never blocks the capture or the others."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from doorphoned.camera.hub import FrameHub
from doorphoned.core.frames import Frame


def frame(seq: int) -> Frame:
    return Frame(seq, float(seq), np.zeros((4, 4, 3), np.uint8))


def test_each_mailbox_gets_the_newest_frame_and_counts_what_it_missed() -> None:
    hub = FrameHub()
    fast, slow = hub.subscribe("fast"), hub.subscribe("slow")
    for seq in range(1, 4):
        hub.publish(frame(seq))
        got = fast.get(timeout=0)
        assert got is not None and got.seq == seq
    newest = slow.get(timeout=0)
    assert newest is not None and newest.seq == 3
    assert (slow.dropped, fast.dropped) == (2, 0)
    assert slow.get(timeout=0) is None  # nothing new since


def test_frames_are_shared_read_only_not_copied() -> None:
    hub = FrameHub()
    a, b = hub.subscribe("a"), hub.subscribe("b")
    hub.publish(frame(1))
    fa, fb = a.get(0), b.get(0)
    assert fa is fb and fa is not None
    with pytest.raises(ValueError):
        fa.image[0, 0, 0] = 1


def test_close_wakes_a_waiting_consumer_and_stops_delivery() -> None:
    hub = FrameHub()
    box = hub.subscribe("qr")
    result: list[Frame | None] = []
    waiter = threading.Thread(target=lambda: result.append(box.get(timeout=60)))
    waiter.start()
    box.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive() and result == [None]
    hub.publish(frame(1))
    assert hub.subscribers == ()


def test_wait_finished_returns_once_the_consumer_is_done_with_that_frame_or_a_later_one() -> None:
    hub = FrameHub()
    hub.subscribe("qr")
    done: list[bool] = []
    waiter = threading.Thread(target=lambda: done.append(hub.wait_finished("qr", 7, 30)))
    waiter.start()
    hub.finished("qr", 6)  # an older frame: still waiting
    waiter.join(0.2)
    assert waiter.is_alive() and not done
    hub.finished("qr", 9)  # it skipped 7 (its mailbox keeps the newest) and finished a later one
    waiter.join(30)
    assert done == [True] and hub.waits_timed_out == 0
    hub.finished("qr", 3)  # never goes back
    assert hub.wait_finished("qr", 8, 0)


def test_wait_finished_gives_up_after_its_timeout_and_counts_it_and_does_not_wait_for_nobody() -> None:
    hub = FrameHub()
    assert hub.wait_finished("qr", 5, 30)  # no consumer of that name: nothing to wait for
    hub.subscribe("qr")
    assert not hub.wait_finished("qr", 5, 0.01)
    assert hub.waits_timed_out == 1
