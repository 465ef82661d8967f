"""A last pjsip module: requests no other module took are answered, not dropped (RFC 3261 §8.2.1, §12.2.2).

pjsip drops out-of-dialog requests that no module handles ("dropped/unhandled by any modules"):
REGISTER sent to the unit, NOTIFY, PUBLISH, INFO, unknown methods got no answer, and their senders
retransmitted for 32 s. pjsua2 has no hook for them, so this module is registered with pjsip itself
(through ctypes: the wheel exports pjsip's C functions) at a priority after every other module. It sees
only what nobody else handled and answers statelessly: ``481 Call/Transaction Does Not Exist`` for an
in-dialog request (To has a tag) or a CANCEL with no dialog or transaction, ``501 Not Implemented``
for everything else; ACK is never answered. Runs in the SIP process only (it needs pjsua2's library).

The request's text is found through ``rdata->msg_info``: its ``info`` field is located once, by the
pointer ``pjsip_rx_data_get_info`` returns, and ``msg_buf``/``len`` sit just before it
(``sip_transport.h``), checked against the method in ``info`` before use.
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PRIORITY = 99  # after the transaction (16), dialog (32) and application (32..64) layers
SCAN_LIMIT = 128 * 1024
_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_TO_TAG = re.compile(r"^(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE | re.MULTILINE)


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


class _Module(ctypes.Structure):
    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("name", _PjStr), ("id", ctypes.c_int),
                ("priority", ctypes.c_int), ("load", ctypes.c_void_p), ("start", ctypes.c_void_p),
                ("stop", ctypes.c_void_p), ("unload", ctypes.c_void_p), ("on_rx_request", _RX),
                ("on_rx_response", ctypes.c_void_p), ("on_tx_request", ctypes.c_void_p),
                ("on_tx_response", ctypes.c_void_p), ("on_tsx_state", ctypes.c_void_p)]


def answer_for(text: str) -> int:
    """The status code for an unhandled request (0: do not answer)."""
    method = text.split(" ", 1)[0]
    head = text.replace("\r\n", "\n").split("\n\n", 1)[0]
    if method == "ACK" or not method:
        return 0
    if method == "CANCEL" or _TO_TAG.search(head):
        return 481
    return 501


class LastResort:
    """Registers the module with the running endpoint; keep the object alive while pjsua2 runs."""

    def __init__(self, library_path: str, on_answer: Callable[[int], None]) -> None:
        self.lib = ctypes.CDLL(library_path)
        self.lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        self.lib.pjsip_rx_data_get_info.restype = ctypes.c_void_p
        self.lib.pjsip_rx_data_get_info.argtypes = [ctypes.c_void_p]
        self.lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.lib.pjsip_endpt_unregister_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.lib.pjsip_endpt_respond_stateless.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.on_answer = on_answer
        self.info_offset = -1
        self.endpt = 0
        self.name = ctypes.create_string_buffer(b"mod-doorphoned-last-resort")
        self.callback = _RX(self._on_rx_request)
        self.module = _Module(name=_PjStr(ctypes.cast(self.name, ctypes.c_char_p), len(self.name.value)), id=-1,
                              priority=PRIORITY, on_rx_request=self.callback)
        self.registered = False

    def register(self) -> None:
        self.endpt = int(self.lib.pjsua_get_pjsip_endpt() or 0)
        if not self.endpt:
            raise RuntimeError("pjsua has no endpoint")
        status = self.lib.pjsip_endpt_register_module(self.endpt, ctypes.byref(self.module))
        if status != 0:
            raise RuntimeError(f"pjsip_endpt_register_module: status {status}")
        self.registered = True

    def unregister(self) -> None:
        if self.registered and self.endpt:
            self.lib.pjsip_endpt_unregister_module(self.endpt, ctypes.byref(self.module))
        self.registered = False

    def _on_rx_request(self, rdata: int) -> int:
        try:
            text = self._text(rdata)
            if text is None:
                return 0
            code = answer_for(text)
            if not code:
                return 0
            self.lib.pjsip_endpt_respond_stateless(self.endpt, rdata, code, None, None, None)
            self.on_answer(code)
            return 1
        except Exception:
            log.exception("SIP: the last-resort module failed")
            return 0

    def _text(self, rdata: int) -> str | None:
        info = int(self.lib.pjsip_rx_data_get_info(rdata) or 0)
        if not info:
            return None
        method = ctypes.string_at(info, 64).split(b" ", 4)
        if self.info_offset < 0:
            self.info_offset = self._find(rdata, info)
            if self.info_offset < 0:
                log.warning("SIP: rdata layout not recognised: unhandled requests stay unanswered")
                return None
        base = rdata + self.info_offset
        buf = ctypes.c_void_p.from_address(base - 3 * ctypes.sizeof(ctypes.c_void_p)).value
        length = ctypes.c_int.from_address(base - 2 * ctypes.sizeof(ctypes.c_void_p)).value
        if not buf or not 0 < length <= SCAN_LIMIT:
            return None
        text = ctypes.string_at(buf, length).decode("utf-8", "replace")
        wanted = method[2].split(b"/")[0].decode(errors="replace") if len(method) > 2 else ""
        return text if text.startswith(wanted + " ") else None

    @staticmethod
    def _find(rdata: int, info: int) -> int:
        """The offset of ``msg_info.info`` in ``pjsip_rx_data`` (its value is the pointer just returned)."""
        size = ctypes.sizeof(ctypes.c_void_p)
        needle = info.to_bytes(size, "little")
        for start in range(0, SCAN_LIMIT, 4096):  # a page at a time: never read far past the structure
            memory = ctypes.string_at(rdata + start, 4096)
            offset = memory.find(needle)
            while offset >= 0:
                if (start + offset) % size == 0:
                    return start + offset
                offset = memory.find(needle, offset + 1)
        return -1


def install(on_answer: Callable[[int], None]) -> Any:
    """The module, registered with the running pjsua endpoint (None when that is not possible)."""
    import pjsua2

    try:
        module = LastResort(pjsua2._pjsua2.__file__, on_answer)
        module.register()
    except (OSError, AttributeError, RuntimeError) as exc:
        log.warning("SIP: unhandled requests stay unanswered (%s)", exc)
        return None
    return module
