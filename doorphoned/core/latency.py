"""A bounded window of recent latencies, summarised for ``status`` (count, p50, p99, last).

Why in the daemon: a figure the unit measures itself (the age of the deciding frame at an access decision)
needs no outside timing, so a bench reads it with ``status --json`` and it holds on any load: what the bench's
own clock would add (hw-sim's show-to-frame wait, the process wake-ups) is not in it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

WINDOW = 1000  # the most recent samples kept: enough for a p99, bounded whatever the traffic


class LatencyWindow:
    """Milliseconds of the last ``size`` events; ``count`` is every sample since start."""

    def __init__(self, size: int = WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, ms: float) -> None:
        self._samples.append(ms)
        self.count += 1

    def summary(self) -> dict[str, Any]:
        """``count`` (since start), and over the window ``p50``/``p99``/``last`` in ms (None when empty)."""
        ordered = sorted(self._samples)
        if not ordered:
            return {"count": self.count, "window": 0, "p50": None, "p99": None, "last": None}
        return {"count": self.count, "window": len(ordered), "p50": round(_rank(ordered, 0.50), 2),
                "p99": round(_rank(ordered, 0.99), 2), "last": round(self._samples[-1], 2)}


def _rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of a sorted list (no interpolation: a value that was measured)."""
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]
