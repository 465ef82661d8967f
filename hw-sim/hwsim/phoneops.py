"""The ``phone_*`` requests of hw-sim's socket: a phone tapping the NFC reader, advertising over BLE, replaying.

The NFC link is shared with the card (one target on the reader at a time: :class:`hwsim.nfc.SimNfcCard`'s lock);
BLE goes through the fake BlueZ (:mod:`hwsim.bluez`), which starts with hw-sim when ``dbus-daemon`` is there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

from hwsim.bluez import BluezError, FakeBluez
from hwsim.nfc import NfcError, SimNfcCard
from hwsim.phone import (
    COMPANY_ID,
    Applet,
    PhoneBook,
    PhoneError,
    ble_token,
    load_unit_key,
    unit_identity,
    walk,
)

log = logging.getLogger(__name__)

ADVERT_INTERVAL = 0.2  # seconds between two adverts a phone sends (RSSI samples the unit smooths)
MAX_ANSWER = 1024
MAX_RAW = 5000


class PhoneService:
    def __init__(self, book: PhoneBook, nfc: SimNfcCard, bluez: FakeBluez) -> None:
        self.book = book
        self.nfc = nfc
        self.bluez = bluez
        self.ble_error = ""

    async def start(self) -> None:
        try:
            await self.bluez.start()
        except (BluezError, OSError) as exc:
            self.ble_error = str(exc)
            log.warning("BLE not simulated: %s", exc)

    async def stop(self) -> None:
        await self.bluez.stop()

    def describe(self) -> dict[str, Any]:
        return {**self.bluez.describe(), "error": self.ble_error}

    def handle(self, req: dict[str, Any], reply: Callable[[dict[str, Any]], None],
               spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """Start the request; ``reply`` answers it when the phone is done."""
        op = req.get("op")
        if op == "phone_nfc":
            phone = self.book.get(_text(req, "name"))
            applet = Applet(phone, load_unit_key(req.get("unit_key")))
            spawn(self._nfc(applet, req, reply, record=True))
        elif op == "phone_nfc_answer":  # any bytes as the answer to the challenge (fuzzing, broken apps)
            answer = bytes.fromhex(_text(req, "answer", MAX_ANSWER * 2, allow_empty=True))
            spawn(self._nfc(Applet(None, answer=answer), req, reply, record=False))
        elif op == "phone_ble":
            spawn(self._ble(req, reply))
        elif op == "phone_ble_raw":  # any manufacturer data, as fast as asked (fuzzing, crowds of phones)
            spawn(self._raw_adverts(_raw_items(req), _seconds(req, "interval", 0.0, low=0.0), reply))
        elif op == "phone_replay":
            self._replay(req, reply, spawn)
        else:
            raise ValueError(f"unknown op {op!r}")

    async def _nfc(self, applet: Applet, req: dict[str, Any], reply: Callable[[dict[str, Any]], None],
                   record: bool) -> None:
        timeout = _seconds(req, "timeout", 5.0)
        try:
            done = await asyncio.to_thread(self.nfc.phone, applet, timeout)
        except NfcError as exc:
            reply({"ok": False, "error": str(exc)})
            return
        if applet.refused_unit:
            reply({"ok": False, "error": "the unit's signature does not verify with --unit-key: not answering"})
            return
        if not done or applet.answered is None:
            reply({"ok": False, "error": f"no reader ran the exchange within {timeout:g} s"})
            return
        if record:
            self.book.keep_last("nfc", {"answer": applet.answered.hex()})
        reply({"ok": True, "answer": applet.answered.hex(), "answered_mono": applet.answered_mono,
               "selected_mono": applet.selected_mono})

    async def _ble(self, req: dict[str, Any], reply: Callable[[dict[str, Any]], None]) -> None:
        try:
            phone = self.book.get(_text(req, "name"))
            unit_point, unit_id = unit_identity(str(req.get("unit_key") or ""))
            counter = self.book.next_counter(phone)
            door, rssi = int(req.get("door", 1)), int(req.get("rssi", -55))
            if not (0 <= door <= 255 and -127 <= rssi <= 20):
                raise PhoneError("door 0-255, rssi -127..20 dBm")
            data = ble_token(phone, unit_point, unit_id, counter, door, str(req.get("mode", "hands-free")),
                             bool(req.get("shaken", True)))
        except (PhoneError, ValueError) as exc:
            reply({"ok": False, "error": str(exc)})
            return
        samples = max(1, round(_seconds(req, "seconds", 3.0) / ADVERT_INTERVAL))
        series = walk(rssi, bool(req.get("walk_in")), samples)
        self.book.keep_last("ble", {"address": phone.address, "data": data.hex(), "rssi": series})
        await self._advertise(phone.address, data, series, reply, record=True, counter=counter)

    async def _advertise(self, address: str, data: bytes, series: list[int], reply: Callable[[dict[str, Any]], None],
                         record: bool, counter: int | None = None) -> None:
        if self.ble_error:
            reply({"ok": False, "error": f"BLE is not simulated: {self.ble_error}"})
            return
        sent: list[float] = []
        try:
            for rssi in series:
                self.bluez.advertise(address, COMPANY_ID, data, rssi)
                sent.append(time.monotonic())
                await asyncio.sleep(ADVERT_INTERVAL)
        except BluezError as exc:
            reply({"ok": False, "error": str(exc)})
            return
        finally:
            self.bluez.forget(address)
        reply({"ok": True, "adverts": len(series), "data": data.hex(), "counter": counter, "sent_mono": sent})

    async def _raw_adverts(self, items: list[tuple[str, bytes, int]], interval: float,
                           reply: Callable[[dict[str, Any]], None]) -> None:
        if self.ble_error:
            reply({"ok": False, "error": f"BLE is not simulated: {self.ble_error}"})
            return
        addresses = set()
        try:
            for address, data, rssi in items:
                addresses.add(address)
                self.bluez.advertise(address, COMPANY_ID, data, rssi)
                await asyncio.sleep(interval)
        finally:
            for address in addresses:
                self.bluez.forget(address)
        reply({"ok": True, "adverts": len(items)})

    def _replay(self, req: dict[str, Any], reply: Callable[[dict[str, Any]], None],
                spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        kind = req.get("kind", "nfc")
        if kind == "nfc":
            answer = bytes.fromhex(self.book.last("nfc")["answer"])
            spawn(self._nfc(Applet(None, answer=answer), req, reply, record=False))
        elif kind == "ble":
            last = self.book.last("ble")
            spawn(self._advertise(str(last["address"]), bytes.fromhex(last["data"]), list(last["rssi"]), reply,
                                  record=False))
        else:
            raise ValueError("kind must be nfc or ble")


def _text(req: dict[str, Any], key: str, limit: int = 200, allow_empty: bool = False) -> str:
    value = req.get(key)
    if not isinstance(value, str) or len(value) > limit or (not value and not allow_empty):
        raise ValueError(f"{key} must be text of at most {limit} characters")
    return value


def _seconds(req: dict[str, Any], key: str, default: float, low: float = 0.2) -> float:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number")
    return min(max(float(value), low), 60.0)


def _raw_items(req: dict[str, Any]) -> list[tuple[str, bytes, int]]:
    """``items``: up to 5000 of ``{address, data (hex), rssi}``."""
    items = req.get("items")
    if not isinstance(items, list) or len(items) > MAX_RAW:
        raise ValueError(f"items must be a list of at most {MAX_RAW} adverts")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("an advert is {address, data, rssi}")
        address = _text(item, "address", 17)
        if not re.fullmatch(r"([0-9A-F]{2}:){5}[0-9A-F]{2}", address):
            raise ValueError("address must look like C0:FF:EE:00:00:01")
        rssi = item.get("rssi", -50)
        if isinstance(rssi, bool) or not isinstance(rssi, int) or not -32768 <= rssi <= 32767:
            raise ValueError("rssi must be an int16")
        out.append((address, bytes.fromhex(_text(item, "data", MAX_ANSWER * 2, allow_empty=True)), rssi))
    return out
