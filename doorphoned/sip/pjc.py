"""pjsip's C API through ctypes, for the SIP process's own pjsip modules (the wheel exports pjsip's functions).

pjsua2 has no hook for requests before the transaction layer, nor for requests no module handled, so
``doorphoned.sip.guard`` and ``doorphoned.sip.lastresort`` register pjsip modules of their own. What they
share lives here: the module structure, reading a request's text from ``pjsip_rx_data``, and stateless
answers. Layouts are those of pjproject 2.15.1 (``sip_module.h``, ``sip_transport.h``, ``sip_msg.h``);
each is checked against a known value before it is relied on.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

SCAN_LIMIT = 128 * 1024
RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
PJSIP_H_ALLOW = 4  # pjsip_hdr_e (sip_msg.h: "DO NOT CHANGE THE VALUE/ORDER")


class PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


class Module(ctypes.Structure):
    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("name", PjStr), ("id", ctypes.c_int),
                ("priority", ctypes.c_int), ("load", ctypes.c_void_p), ("start", ctypes.c_void_p),
                ("stop", ctypes.c_void_p), ("unload", ctypes.c_void_p), ("on_rx_request", RX),
                ("on_rx_response", ctypes.c_void_p), ("on_tx_request", ctypes.c_void_p),
                ("on_tx_response", ctypes.c_void_p), ("on_tsx_state", ctypes.c_void_p)]


class Hdr(ctypes.Structure):
    """``PJSIP_DECL_HDR_MEMBER``: what every pjsip header starts with."""

    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("type", ctypes.c_int), ("name", PjStr),
                ("sname", PjStr), ("vptr", ctypes.c_void_p)]


class ArrayHdr(ctypes.Structure):
    """``pjsip_generic_array_hdr`` (Allow, Supported, Accept)."""

    _fields_ = [("hdr", Hdr), ("count", ctypes.c_uint), ("values", PjStr * 32)]


def library() -> ctypes.CDLL:
    """pjsua2's extension module, loaded again by path: the same, already initialised, pjsip."""
    import pjsua2

    lib = ctypes.CDLL(pjsua2._pjsua2.__file__)
    lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
    lib.pjsip_rx_data_get_info.restype = ctypes.c_void_p
    lib.pjsip_rx_data_get_info.argtypes = [ctypes.c_void_p]
    lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.pjsip_endpt_unregister_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.pjsip_endpt_respond_stateless.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.pjsip_endpt_get_capability.restype = ctypes.c_void_p
    lib.pjsip_endpt_get_capability.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    return lib


class PjModule:
    """A pjsip module whose ``on_rx_request`` is ``handler(rdata) -> bool`` (True: the request is taken)."""

    def __init__(self, lib: ctypes.CDLL, name: bytes, priority: int, handler: Any) -> None:
        self.lib = lib
        self.endpt = 0
        self.name = ctypes.create_string_buffer(name)
        self.handler = handler
        self.callback = RX(self._on_rx_request)
        self.module = Module(name=PjStr(ctypes.cast(self.name, ctypes.c_char_p), len(name)), id=-1,
                             priority=priority, on_rx_request=self.callback)
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
            return 1 if self.handler(rdata) else 0
        except Exception:
            log.exception("SIP: pjsip module %s failed", self.name.value.decode())
            return 0

    def respond(self, rdata: int, code: int, reason: str = "", headers: Any = None) -> None:
        """Answer statelessly (pjsip copies Via, From, To, Call-ID and CSeq from the request)."""
        text = ctypes.create_string_buffer(reason.encode())
        phrase = PjStr(ctypes.cast(text, ctypes.c_char_p), len(text.value))
        self.lib.pjsip_endpt_respond_stateless(self.endpt, rdata, code, ctypes.byref(phrase) if reason else None,
                                               headers, None)


class RdataText:
    """The text of a received request: ``rdata->msg_info.msg_buf``/``len`` sit just before ``info``, whose
    offset is found once by the pointer ``pjsip_rx_data_get_info`` returns (``sip_transport.h``)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.info_offset = -1

    def __call__(self, rdata: int) -> str | None:
        info = int(self.lib.pjsip_rx_data_get_info(rdata) or 0)
        if not info:
            return None
        method = ctypes.string_at(info, 64).split(b" ", 4)
        if self.info_offset < 0:
            self.info_offset = self._find(rdata, info)
            if self.info_offset < 0:
                log.warning("SIP: rdata layout not recognised: requests cannot be read")
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
