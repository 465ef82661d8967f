"""The door path before the picture: the monitor stream's streaming threads run at a lower CPU priority.

The camera process decodes QR codes and hosts the RTSP stream on the same 2 cores. A viewer makes the stream
encode 15 frames a second (``videoconvert`` and ``x264enc``, whose slice threads wake together for each frame)
and payload and send them: bursts of CPU that a QR frame arriving at that moment waits behind. A frame a viewer
gets a few milliseconds late is not seen; a door that opens late is. So every thread GStreamer starts in the
stream's pipeline sets its own nice value (``monitor.encoder_nice``) as it starts, and the scheduler gives the
QR decoding, the capture and the daemon the CPU first; the stream still gets whatever is left, which on an
idle unit is everything it needs.

How: GStreamer posts a ``stream-status`` message of type ENTER from each streaming thread it starts, before
the thread moves data; a *sync* handler runs in that thread, so it can renice itself
(``setpriority(PRIO_PROCESS, native_tid, n)`` sets one thread's nice value on Linux). x264 creates its worker
threads from the thread that opens the encoder (the encoder's streaming thread, at the first caps), and a
new thread inherits its creator's nice value: they are lowered with it. Only GStreamer's own threads are
lowered, never a Python thread of ours that takes the GIL for long (a lowered thread holding the GIL would
make the QR thread wait for it).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)

MAX_NICE = 19


def lower_streaming_threads(pipeline: Any, gst: Any, nice: int) -> None:
    """Make each streaming thread ``pipeline`` starts from now on set its nice value to ``nice`` (0: leave it).

    Call it before the pipeline leaves NULL (``media-configure``): threads started earlier are not seen."""
    if nice <= 0 or pipeline is None:
        return
    nice = min(nice, MAX_NICE)
    bus = pipeline.get_bus()
    bus.enable_sync_message_emission()
    bus.connect("sync-message::stream-status", _on_stream_status, gst, nice)


def _on_stream_status(_bus: Any, message: Any, gst: Any, nice: int) -> None:
    """In the thread that posted it: lower this thread when it enters its streaming loop, and give it back its
    value when it leaves (GStreamer's threads go back to GLib's shared pool, to serve whatever comes next)."""
    kind, _owner = message.parse_stream_status()
    if kind == gst.StreamStatusType.ENTER:
        lower_this_thread(nice)
    elif kind == gst.StreamStatusType.LEAVE:
        restore_this_thread()


_before = threading.local()  # the calling thread's nice value before lower_this_thread


def lower_this_thread(nice: int) -> None:
    """Set the calling thread's nice value (a thread of its own on Linux: the process's others keep theirs).

    Never raises: a unit whose stream runs at normal priority still works, so a refusal is only logged."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.warning("monitor: cannot lower a streaming thread's priority to nice %d: %s", nice, exc)
        return
    if not hasattr(_before, "nice"):
        _before.nice = before


def restore_this_thread() -> None:
    """Give the calling thread back the nice value it had before :func:`lower_this_thread`. Raising a priority
    needs ``CAP_SYS_NICE`` (root has it): without it the thread stays lowered, which costs nothing but its own
    speed, so that refusal is not logged above debug."""
    before = getattr(_before, "nice", None)
    if before is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), before)
    except OSError as exc:
        log.debug("monitor: a streaming thread stays at its lowered priority: %s", exc)
        return
    del _before.nice
