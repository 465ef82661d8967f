"""The lock-driver seam: every way of opening a door looks the same to the door controller.

A door is backed by a GPIO relay on the unit or by a third-party lock (e.g. a Salto or Nuki
bridge reached over HTTP), so the app can list both as "relays". Timing (trigger delay, hold,
monostable/bistable) belongs to the door, not the driver: a driver only knows *unlock* and *lock*.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class DriverHealth:
    ok: bool
    detail: str


class LockDriver(ABC):
    """Base of lock drivers.

    Must override: :meth:`unlock`, :meth:`lock`, :meth:`describe`.
    May override: :meth:`start` (open hardware or sessions), :meth:`close` (release them;
    must be idempotent), :meth:`check` (a self-test that never opens the door), :meth:`fault`
    (why the lock's hardware cannot be driven right now, e.g. a relay board that stopped answering),
    :meth:`set_hold_time` (a driver that tells the lock how long to stay open).
    """

    kind: str = "abstract"

    def __init__(self) -> None:
        self.unlocked = False

    async def start(self) -> None:
        """Acquire what the driver needs; the door then drives it to its safe (locked) state."""

    @abstractmethod
    async def unlock(self) -> None:
        """Release the lock now; raise :class:`LockError` if that did not happen."""

    @abstractmethod
    async def lock(self) -> None:
        """Return to the safe, locked state; raise :class:`LockError` if that did not happen."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """Wiring facts for ``relay list`` (no secrets)."""

    def fault(self) -> str:
        """Non-empty while the hardware is known to be unreachable: opens fail at once and the lock's
        state is unknown until it is back."""
        return ""

    async def check(self) -> DriverHealth:
        """A self-test for ``doctor`` that does not open the door."""
        return DriverHealth(True, "no self-test for this driver")

    async def close(self) -> None:
        """Release hardware or sessions; idempotent."""

    def set_hold_time(self, seconds: float) -> None:
        """A reload changed the door's hold time; only drivers that send it to the lock keep it."""
