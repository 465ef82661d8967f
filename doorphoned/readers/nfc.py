"""NFC/RFID cards and NFC phones through nfcpy: a card's ISO 14443A UID, a phone's signed answer.

An ISO-DEP target is first asked for the door-access application (``readers/nfc_phone.py``); a phone answers
the unit's challenge, anything else is a card and its UID is what counts.

nfcpy is blocking, so one thread per session polls the reader (``clf.connect`` with a terminate
check) and hands each UID to the loop. Device strings are nfcpy's: ``usb`` (a PN533/ACR122 on USB),
``tty:S0:pn532`` (a PN532 on a UART) and, for hw-sim, ``udp:127.0.0.1:PORT``.

Security note (docs/readers.md): a UID is not a secret. Cards identified by UID alone can be cloned
with cheap tools; sites that need more should use phone credentials (challenge-based) or DESFire
cards with keys (a later reader mode).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from doorphoned.core.clock import Clock
from doorphoned.core.phonekeys import UnitKey
from doorphoned.core.ports import Gate
from doorphoned.core.presentations import CardTap, CredentialFormatError, NfcPhoneTap, normalise_card_uid
from doorphoned.readers.base import ReaderFeature, RepeatFilter
from doorphoned.readers.config import NfcConfig
from doorphoned.readers.nfc_phone import PhoneError, exchange

log = logging.getLogger(__name__)

CONNECTED = object()
MAX_SILENT_FAILURES = 5
JOIN_SECONDS = 5.0


class NfcReader(ReaderFeature):
    name = "nfc"

    def __init__(self, config: NfcConfig, gate: Gate, clock: Clock, unit: UnitKey | None = None) -> None:
        super().__init__(gate, config.doors, clock)
        self.config = config
        self.unit = unit if config.phones else None
        self._repeats = RepeatFilter(config.repeat_delay)
        self.phone_taps = 0
        self.phone_errors = 0

    async def run_session(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        thread = threading.Thread(target=self._poll, args=(loop, queue, stop), name="nfc", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is CONNECTED:
                    self.connected()
                elif isinstance(item, PhoneError):  # before Exception: a phone's bad answer is not a reader fault
                    self.phone_errors += 1
                elif isinstance(item, Exception):
                    raise item
                elif isinstance(item, NfcPhoneTap):
                    await self._phone(item)
                else:
                    await self._uid(item)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, JOIN_SECONDS)

    def _poll(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], stop: threading.Event) -> None:
        import nfc

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def on_connect(tag: Any) -> bool:
            put(self._identify(tag))
            # The UID is all we need; a card left on the reader is read again at the next poll, and the
            # RepeatFilter makes all those reads one presentation until it has left the field.
            return False

        try:
            clf = nfc.ContactlessFrontend(self.config.device)
        except (OSError, ValueError) as exc:
            put(ConnectionError(f"NFC device {self.config.device!r} not available: {exc or type(exc).__name__}"))
            return
        rdwr = {"targets": ["106A"], "on-connect": on_connect, "iterations": 1, "interval": 0.1,
                "beep-on-connect": False}
        put(CONNECTED)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    result = clf.connect(rdwr=rdwr, terminate=stop.is_set)
                except Exception as exc:  # a card answering garbage must not end the session
                    log.warning("nfc: unreadable card: %s", type(exc).__name__)
                    continue
                failures = failures + 1 if result is False else 0
                if failures > MAX_SILENT_FAILURES:
                    put(ConnectionError(f"NFC device {self.config.device!r} stopped answering"))
                    return
                if result is False:
                    time.sleep(0.2)
        finally:
            clf.close()

    def _identify(self, tag: Any) -> str | NfcPhoneTap | PhoneError:
        """On the nfcpy thread: a phone's answer, a phone that failed, or a card's UID (never a phone's)."""
        import nfc.tag.tt4

        if self.unit is not None and isinstance(tag, nfc.tag.tt4.Type4Tag):
            try:
                found = exchange(tag, self.unit, self.name)
            except PhoneError as exc:
                log.warning("nfc: phone exchange ended: %s", exc)
                return exc
            if isinstance(found, NfcPhoneTap):
                return found
        return bytes(tag.identifier).hex().upper()

    async def _phone(self, tap: NfcPhoneTap) -> None:
        """A phone held on the reader answers every poll: one presentation per stay, as a card. A stale answer
        is its own presentation (a recorded answer played back is refused as replayed, once per stay)."""
        self.phone_taps += 1
        value = f"phone:{tap.key_id}" if tap.fresh else f"stale:{tap.key_id}:{tap.challenge.hex()}"
        if not self._repeats.first(value, self.clock.monotonic()):
            return
        self.reads += 1
        results = await self.gate.present(tap, self.doors)
        if results and all(r.reason == "bad_signature" for r in results):
            # Someone else's phone naming this key id must not make the real one wait out repeat_delay.
            self._repeats.forget(value)

    async def _uid(self, raw: str) -> None:
        try:
            uid = normalise_card_uid(raw)
        except CredentialFormatError:
            log.warning("nfc: card with an unusable UID (%d hex digits) ignored", len(raw))
            return
        if self._repeats.first(uid, self.clock.monotonic()):
            await self.deliver(CardTap(uid, self.name))

    def reader_status(self) -> dict[str, Any]:
        return {"device": self.config.device, "cards_in_field": self._repeats.present(self.clock.monotonic()),
                "phones": self.unit is not None, "phone_taps": self.phone_taps, "phone_errors": self.phone_errors}
