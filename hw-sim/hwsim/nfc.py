"""The simulated NFC card: nfcpy's ``udp:`` link, with hw-sim playing an ISO 14443A card.

The card answers as ISO-DEP (SEL_RES 0x20) and sends the ATS itself: with SEL_RES 0x00 nfcpy's
reader would try Type 2 commands the emulation cannot answer (missed taps, or the same card read
thousands of times). The udp driver handles 4- and 7-byte UIDs only.

Each tap binds the UDP port for as long as it waits for the reader (``timeout``) and then until the reader
is done with the card (it answers the reader's SELECT of the door-access application with 6A82, as a
card without it does); the reader side polls about once a second, so a tap is read within ~1 s.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

ATS = bytes.fromhex("0578807002")
NO_APPLICATION = bytes.fromhex("6A82")
TAP_TIMEOUT = 5.0


def _no_application(_apdu: bytes) -> bytes:
    """A plain card's answer to any APDU: 6A82, file or application not found."""
    return NO_APPLICATION


class NfcError(ValueError):
    pass


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimNfcCard:
    def __init__(self, port: int) -> None:
        self.port = port or free_udp_port()
        self._busy = threading.Lock()

    @property
    def device(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    def tap(self, uid_hex: str, timeout: float = TAP_TIMEOUT) -> bool:
        """Present a card until a reader has read it (True) or ``timeout`` passes (False). Blocking."""
        uid = self._claim(uid_hex)
        try:
            return self._present(uid, timeout)
        finally:
            self._busy.release()

    def hold(self, uid_hex: str, seconds: float) -> int:
        """Leave a card on the reader for ``seconds``: it answers every poll, as a card lying there does.
        Returns how many times a reader read it. Blocking."""
        uid = self._claim(uid_hex)
        reads, deadline = 0, time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                reads += self._present(uid, left)
        finally:
            self._busy.release()
        return reads

    def phone(self, applet: Callable[[bytes], bytes], timeout: float = TAP_TIMEOUT) -> bool:
        """Be a phone on the reader (``hwsim/phone.py``) until one exchange ran (True) or ``timeout``. Blocking."""
        from hwsim.phone import present_phone

        if not self._busy.acquire(blocking=False):
            raise NfcError("another card or phone is being presented")
        try:
            return present_phone(self.device, applet, timeout)
        finally:
            self._busy.release()

    def _claim(self, uid_hex: str) -> bytes:
        uid = bytes.fromhex(uid_hex)
        if len(uid) not in (4, 7):
            raise NfcError("the simulated card supports 4- or 7-byte UIDs (nfcpy's udp link cannot do 10)")
        if not self._busy.acquire(blocking=False):
            raise NfcError("another card is being presented")
        return uid

    def _present(self, uid: bytes, timeout: float) -> bool:
        import nfc
        import nfc.clf

        target: Any = nfc.clf.LocalTarget("106A")
        target.sens_res = bytearray.fromhex("4400" if len(uid) == 7 else "0400")
        target.sdd_res = bytearray(uid)
        target.sel_res = bytearray.fromhex("20")
        clf = nfc.ContactlessFrontend(self.device)
        try:
            activated = clf.listen(target, timeout)
            if activated is None:
                return False
            if activated.tt4_cmd and activated.tt4_cmd[0] == 0xE0:  # RATS: answer with our ATS
                # Then stay in the field until the reader is done, answering its SELECT of the door-access
                # application as a card without it does (6A82). Leaving at its first command left the
                # reader retrying that SELECT into the next tap's listener, which took the retries and
                # the next poll for its own read and left before the reader ever saw it.
                from hwsim.phone import iso_dep
                iso_dep(clf, _no_application)
            return True
        finally:
            clf.close()
