"""The stream's stall watchdog: notices viewers that play but get no RTP, and says what to do about it.

A viewer whose PLAY was answered 200 and then gets no packet at all is the worst failure of the stream: the
RTSP side looks healthy, the picture never comes. Whatever the cause (a pipeline wedged at preroll, an
encoder that stopped, a frame source that went quiet), the unit must get out of it by itself. The server
ticks :class:`StallWatch` once a second on its GLib thread with the number of RTP packets sent so far and
whether any viewer is playing; the watch answers:

- ``"key"`` once no packet went out for ``stall_seconds`` while someone plays: the server forces a key frame
  and sets the pipeline to PLAYING again (cheap, and enough when the encoder only waited for a key unit);
- ``"restart"`` when still none went out ``restart_seconds`` after the quiet began: the server closes the
  viewers of the media, which is torn down and built afresh at their next connection (players reconnect).

Pure logic with the clock passed in, so the thresholds are tested without a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

KEY = "key"
RESTART = "restart"


@dataclass
class StallWatch:
    """Counts the quiet time of the packet counter while viewers play (see the module docstring)."""

    stall_seconds: float = 3.0
    restart_seconds: float = 6.0
    quiet: float = 0.0  # how long the stream had been quiet at the last action
    stalls: int = 0  # quiet spells that forced a key frame
    restarts: int = 0  # quiet spells that restarted the media
    _packets: int = -1
    _quiet_since: float | None = None
    _stage: int = 0

    def tick(self, now: float, packets: int, playing: bool) -> str | None:
        """One look at the stream: ``KEY``, ``RESTART`` or None (nothing to do)."""
        if not playing or packets != self._packets or self._quiet_since is None:
            self._packets = packets
            self._quiet_since = now if playing else None
            self._stage = 0
            return None
        quiet = self.quiet = now - self._quiet_since
        if self._stage == 0 and quiet >= self.stall_seconds:
            self._stage = 1
            self.stalls += 1
            return KEY
        if self._stage >= 1 and quiet >= self.restart_seconds:
            self._stage = 0
            self._quiet_since = now  # a restart that did not take begins a new quiet spell: key, then restart
            self.restarts += 1
            return RESTART
        return None

    def quiet_for(self, now: float) -> float:
        """Seconds without a packet while someone plays (0 when packets flow or nobody plays)."""
        return 0.0 if self._quiet_since is None else now - self._quiet_since
