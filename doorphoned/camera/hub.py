"""The in-process fan-out of one capture's frames to its consumers' mailboxes.

The capture thread calls :meth:`FrameHub.publish` for each frame; each consumer thread waits on its own
:class:`Mailbox`. Publishing never blocks on a consumer: a mailbox keeps only the newest frame, and the
frame object itself is shared, not copied (its image is made read-only before it is handed out).
"""

from __future__ import annotations

import threading

from doorphoned.core.frames import Frame


class Mailbox:
    """A one-frame mailbox (``core.frames.FrameSubscription``); ``dropped`` counts frames replaced
    before the consumer took them, which is how a slow consumer shows in stats."""

    def __init__(self, hub: FrameHub, name: str) -> None:
        self.name = name
        self.delivered = 0
        self.dropped = 0
        self._hub = hub
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            if frame is not None:
                self.delivered += 1
            return None if self._closed else frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._frame = None
            self._cond.notify_all()
        self._hub.unsubscribe(self)


class FrameHub:
    """Frames in from one capture, out to every subscribed mailbox (``core.frames.FrameSource``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mailboxes: tuple[Mailbox, ...] = ()
        self.published = 0
        self.last: Frame | None = None
        self._finished: dict[str, int] = {}  # consumer name -> the newest frame it is done with
        self._finished_cond = threading.Condition()
        self.waits_timed_out = 0  # wait_finished calls that gave up: the consumer waited for was slow

    def subscribe(self, name: str) -> Mailbox:
        mailbox = Mailbox(self, name)
        with self._lock:
            self._mailboxes = (*self._mailboxes, mailbox)
        return mailbox

    def unsubscribe(self, mailbox: Mailbox) -> None:
        with self._lock:
            self._mailboxes = tuple(m for m in self._mailboxes if m is not mailbox)

    def finished(self, name: str, seq: int) -> None:
        with self._finished_cond:
            if seq > self._finished.get(name, -1):
                self._finished[name] = seq
                self._finished_cond.notify_all()

    def wait_finished(self, name: str, seq: int, timeout: float) -> bool:
        if not any(m.name == name for m in self._mailboxes):
            return True
        with self._finished_cond:
            done = self._finished_cond.wait_for(lambda: self._finished.get(name, -1) >= seq, timeout)
        if not done:
            self.waits_timed_out += 1
        return done

    @property
    def subscribers(self) -> tuple[Mailbox, ...]:
        return self._mailboxes

    def publish(self, frame: Frame) -> None:
        """Hand ``frame`` to every mailbox; the image is frozen first so no consumer can change what the
        others see."""
        image = frame.image
        if getattr(image, "flags", None) is not None and image.flags.writeable:
            image.flags.writeable = False
        self.last = frame
        self.published += 1
        for mailbox in self._mailboxes:
            mailbox.put(frame)
