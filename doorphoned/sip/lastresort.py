"""A last pjsip module: requests no other module took are answered, not dropped (RFC 3261 §8.2.1, §12.2.2).

pjsip drops out-of-dialog requests that no module handles ("dropped/unhandled by any modules"):
unknown methods got no answer, and their senders retransmitted for 32 s. pjsua2 has no hook for them,
so this module is registered with pjsip itself (``doorphoned.sip.pjc``) at a priority after every other
module. It sees only what nobody else handled and answers statelessly: ``481 Call/Transaction Does Not
Exist`` for an in-dialog request (To has a tag) or a CANCEL with no dialog or transaction, ``501 Not
Implemented`` for everything else; ACK is never answered. Methods the unit knows but does not accept are
answered 405 earlier, by ``doorphoned.sip.guard``. Runs in the SIP process only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from doorphoned.sip import pjc

log = logging.getLogger(__name__)

PRIORITY = 99  # after the transaction (16), dialog (32) and application (32..64) layers
_TO_TAG = re.compile(r"^(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE | re.MULTILINE)


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

    def __init__(self, lib: Any, on_answer: Callable[[int], None]) -> None:
        self.on_answer = on_answer
        self.text = pjc.RdataText(lib)
        self.module = pjc.PjModule(lib, b"mod-doorphoned-last-resort", PRIORITY, self._on_rx_request)

    def register(self) -> None:
        self.module.register()

    def unregister(self) -> None:
        self.module.unregister()

    def _on_rx_request(self, rdata: int) -> bool:
        text = self.text(rdata)
        if text is None:
            return False
        code = answer_for(text)
        if not code:
            return False
        self.module.respond(rdata, code)
        self.on_answer(code)
        return True


def install(on_answer: Callable[[int], None]) -> Any:
    """The module, registered with the running pjsua endpoint (None when that is not possible)."""
    try:
        module = LastResort(pjc.library(), on_answer)
        module.register()
    except (OSError, AttributeError, RuntimeError) as exc:
        log.warning("SIP: unhandled requests stay unanswered (%s)", exc)
        return None
    return module
