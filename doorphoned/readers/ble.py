"""Bluetooth phones: the door app's advert tokens, heard with bleak (BlueZ over D-Bus), judged by distance.

A phone asking to open advertises manufacturer data (``core/phonekeys.parse_ble``: key tag, counter, time slot,
door, mode, flags, an 8-byte MAC under a key only this phone and this unit share). The reader parses it, smooths
the RSSI of each token over its adverts and applies the mode's distance rule; whether the token is genuine, fresh
and allowed is ``access/decide.py``'s to say. Each token is presented once while it is in the air: as soon as it is
in range, or, after ``too_far_after`` seconds out of range, once as too far (at most once per phone per 30 s, so
phones walking past do not flood the log); a tag no key here has is not presented again for 10 s (another site's
phones, a crowd). Neither rule can hold back an in-range token of an enrolled phone, whoever else sends its tag.
Shake tokens without the phone's shake flag are not requests.

bleak calls back on the loop; nothing here blocks. Protocol and what it does not stop: docs/phone.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from doorphoned.core.clock import Clock
from doorphoned.core.phonekeys import COMPANY_ID, FLAG_SHAKEN, BleToken, PhoneFormatError, parse_ble
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import BlePhone
from doorphoned.readers.base import ReaderFeature
from doorphoned.readers.config import BleConfig

log = logging.getLogger(__name__)

MAX_TOKENS = 1024  # tokens remembered at once (a crowd of phones, or a flood of garbage, stays bounded)
TOO_FAR_QUIET = 30.0  # a phone out of range is refused as too far at most this often
UNKNOWN_QUIET = 10.0
BUS_CHECK_SECONDS = 1.0  # a phone this unit does not know (another site's, a wrong key) is refused at most this often


@dataclass
class Sighting:
    """One token in the air: its smoothed RSSI and what has been done about it."""

    token: BleToken
    first: float
    last: float
    rssi: float
    samples: int = 1
    presented: bool = False


def rssi_limit(config: BleConfig, mode: str) -> float:
    """The weakest smoothed RSSI at which ``mode`` opens: the log-distance model at the mode's distance."""
    metres = {"hands-free": config.hands_free_m, "tap": config.tap_m, "shake": config.shake_m}[mode]
    return config.measured_power - 10 * config.path_loss * math.log10(metres)


class BleReader(ReaderFeature):
    name = "ble"

    def __init__(self, config: BleConfig, gate: Gate, clock: Clock) -> None:
        super().__init__(gate, config.doors, clock)
        self.config = config
        self._seen: dict[bytes, Sighting] = {}
        self._unknown: dict[bytes, float] = {}  # tag -> until when it is taken as unknown without asking again
        self._far: dict[bytes, float] = {}  # tag -> until when a too-far token of it is not presented again
        self.adverts = 0
        self.garbage = 0
        self.presented = 0

    async def run_session(self) -> None:
        if self.config.bus:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.config.bus  # bleak's BlueZ backend reads it
        from bleak import BleakScanner

        scanner = BleakScanner(self._advert)
        try:
            await scanner.start()
        except Exception as exc:  # bleak raises its own, dbus-fast's and OSError for a bus that is not there
            raise ConnectionError(f"cannot scan: {type(exc).__name__}: {exc}") from None
        self.connected()
        try:
            await self._while_bus_lives()
        finally:
            with contextlib.suppress(Exception):  # the bus may be gone already
                await scanner.stop()

    async def _while_bus_lives(self) -> None:
        """Adverts arrive through the callback; this only notices BlueZ's bus going away (bleak resets itself
        quietly then, and a scan would hear nothing ever again), so the session ends as a fault and is retried."""
        from bleak.backends.bluezdbus.manager import get_global_bluez_manager

        manager = await get_global_bluez_manager()
        while True:
            await self.clock.sleep(BUS_CHECK_SECONDS)
            bus = getattr(manager, "_bus", None)  # bleak keeps no public word on it
            if bus is None or not bus.connected:
                raise ConnectionError("the D-Bus connection to BlueZ was lost")

    def _advert(self, device: Any, adv: Any) -> None:
        data = adv.manufacturer_data.get(COMPANY_ID)
        if data is None:
            return
        self.adverts += 1
        now = self.clock.monotonic()
        try:
            rssi = float(adv.rssi)
            if not -127 <= rssi <= 20:  # BlueZ's range (127: unknown); NaN fails too
                raise PhoneFormatError(f"RSSI {rssi!r} out of range")
            self._heard(bytes(data), rssi, now)
        except PhoneFormatError:
            self.garbage += 1
        except Exception:  # one advert never ends the scan
            self.garbage += 1
            log.exception("ble: advert not handled")

    def _heard(self, data: bytes, rssi: float, now: float) -> None:
        sight = self._seen.get(data)
        if sight is not None and now - sight.last >= self.config.repeat_delay:
            sight = None  # out of the air long enough: heard again, it is a new presentation (a replay)
        if sight is None:
            token = parse_ble(data)
            if token.mode == "shake" and not token.flags & FLAG_SHAKEN:
                return  # near the unit, not asking
            self._forget(now)
            sight = self._seen[data] = Sighting(token, now, now, rssi)
        else:
            sight.rssi += self.config.smoothing * (rssi - sight.rssi)
            sight.samples += 1
            sight.last = now
        if not sight.presented and sight.samples >= self.config.min_samples:
            self._judge(sight, now)

    def _judge(self, sight: Sighting, now: float) -> None:
        tag = sight.token.tag
        if now < self._unknown.get(tag, now):
            sight.presented = True  # no such key here a moment ago (another site's phone): not asked again yet
            return
        in_range = sight.rssi >= rssi_limit(self.config, sight.token.mode)
        if not in_range:
            if now - sight.first < self.config.too_far_after or now < self._far.get(tag, now):
                return
            self._far[tag] = now + TOO_FAR_QUIET
        sight.presented = True
        self.presented += 1
        door = sight.token.door
        doors = (door,) if door in self.doors else self.doors
        self.spawn(self._present(BlePhone(sight.token, round(sight.rssi, 1), in_range), doors), "token")

    async def _present(self, credential: BlePhone, doors: tuple[int, ...]) -> None:
        self.reads += 1
        results = await self.gate.present(credential, doors)
        if results and all(r.reason == "unknown" for r in results):  # a tag no key here has: nothing an attacker
            self._unknown[credential.token.tag] = self.clock.monotonic() + UNKNOWN_QUIET  # can silence a user by

    def _forget(self, now: float) -> None:
        """Tokens out of the air for ``repeat_delay`` are forgotten (heard again, they are presented again)."""
        window = self.config.repeat_delay
        self._seen = {d: s for d, s in self._seen.items() if now - s.last < window}
        while len(self._seen) >= MAX_TOKENS:
            self._seen.pop(next(iter(self._seen)))
        self._unknown = {t: until for t, until in self._unknown.items() if now < until}
        self._far = {t: until for t, until in self._far.items() if now < until}

    def reader_status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        in_air = sum(1 for s in self._seen.values() if now - s.last < self.config.repeat_delay)
        return {"bus": self.config.bus or "system", "adverts": self.adverts, "garbage": self.garbage,
                "presented": self.presented, "tokens_in_air": in_air}
