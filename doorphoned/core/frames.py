"""What a consumer of camera frames sees: one frame type and one way to wait for the newest frame.

The camera is captured once (``doorphoned/camera/``) and its frames are shared by QR decoding, motion
detection, snapshots, the monitor stream and face recognition. They meet here, in the core, so that none of
them imports the capture (or each other), and a test can feed any of them synthetic frames.

Frames are shared by reference, never copied per consumer: the image array is read-only
(``flags.writeable`` is False), so a consumer that wants to draw on a frame must copy it itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Frame:
    """One captured picture.

    ``seq`` grows by one per captured frame (a consumer that sees a jump knows it dropped frames);
    ``monotonic`` is the capture instant on ``time.monotonic()``'s scale, so latency is measured from the
    glass, not from when a slow consumer got round to it.
    """

    seq: int
    monotonic: float
    image: Any  # numpy.ndarray, HxWx3 uint8 BGR, read-only


class FrameSubscription(Protocol):
    """One consumer's mailbox: it holds only the newest frame, so a slow consumer drops frames instead
    of slowing the capture or the other consumers."""

    def get(self, timeout: float) -> Frame | None:
        """The newest frame this subscription has not returned yet; ``None`` after ``timeout`` seconds
        without one, or once the subscription is closed."""

    def close(self) -> None:
        """Stop receiving frames; a ``get`` waiting in another thread returns ``None``."""


class FrameSource(Protocol):
    """A camera (or a test's synthetic scene) that consumers subscribe to."""

    def subscribe(self, name: str) -> FrameSubscription:
        """A new mailbox; ``name`` says who it is in stats and logs (``qr``, ``motion``, ``monitor``)."""

    def finished(self, name: str, seq: int) -> None:
        """The consumer ``name`` is done with frame ``seq`` (and so with every frame before it)."""

    def wait_finished(self, name: str, seq: int, timeout: float) -> bool:
        """Wait until the consumer ``name`` is done with frame ``seq`` (at most ``timeout`` s; at once when no
        consumer of that name is subscribed): a consumer that must not compete with ``name`` for the CPU at
        the frame's instant waits here. Whether ``name`` finished in time."""
