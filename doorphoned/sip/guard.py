"""A first pjsip module: requests are judged before pjsip's transaction layer sees them.

Three things pjsip 2.15.1 does not do, each answered statelessly from here (priority 15: before the
transaction layer, 16), so the request reaches no other module:

- **A header that may appear once, twice** (From, To, Call-ID, CSeq, Max-Forwards, Content-Length; RFC 3261
  §7.3.1): pjsip's parser stores each such header in ``rdata->msg_info`` as it reads it, so the *last* one
  is what transactions and dialogs use, while ``pjsip_msg_find_hdr`` (and pjsua2's header lists) return the
  *first*; for Content-Length on TCP, the transport frames the message with the first one found in the text.
  Such a request is answered ``400 Duplicate <Header> Header`` and goes no further; an ACK is dropped.
- **A method the unit knows but does not accept** out of a dialog (REGISTER, PUBLISH, SUBSCRIBE, NOTIFY,
  MESSAGE, REFER): ``405 Method Not Allowed`` with an ``Allow`` header (§8.2.1). Without this pjsua answers
  MESSAGE (200, instant messages) and SUBSCRIBE (presence) itself. BYE, INFO, UPDATE and PRACK outside a
  dialog are ``481`` (they exist only inside one: RFC 6086 §4.2.2, RFC 3311, RFC 3262). The endpoint's own
  ``Allow`` (sent with OPTIONS' 200 and with every dialog answer) is set to :data:`ALLOW`, so both agree.
- **A branch another sender uses**: pjsip keys server transactions on the top Via's branch and the method
  only, so a request from another sent-by reusing a live branch was taken for a retransmission and absorbed
  without an answer; RFC 3261 §17.2.3 also compares the sent-by. The sent-by of each recent branch is kept
  for :data:`BRANCH_TTL` seconds; a request with a known branch and another sent-by cannot be given a
  transaction of its own, and is answered ``482 Loop Detected`` (what §8.2.2.2 answers a request that
  collides with an ongoing transaction it does not belong to); it can be sent again with a fresh branch.
  A retransmission from the first sender (same sent-by) passes and is absorbed as before; an ACK with
  that branch from another sent-by is dropped (it would confirm the first sender's transaction).
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from doorphoned.sip import pjc

log = logging.getLogger(__name__)

PRIORITY = 15  # before the transaction layer (PJSIP_MOD_PRIORITY_TSX_LAYER = 16)
ALLOW = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK")
NOT_ALLOWED = frozenset({"REGISTER", "PUBLISH", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER"})
DIALOG_ONLY = frozenset({"BYE", "INFO", "UPDATE", "PRACK"})
BRANCH_TTL = 64.0  # seconds: an INVITE transaction lives at most ~32 s after its final answer (timer H)
MAX_BRANCHES = 20_000  # the oldest are forgotten first
_ONCE = {"from": "From", "f": "From", "to": "To", "t": "To", "call-id": "Call-ID", "i": "Call-ID",
         "cseq": "CSeq", "max-forwards": "Max-Forwards", "content-length": "Content-Length", "l": "Content-Length"}
_TAG = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)
_BRANCH = re.compile(r";[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    """A stateless answer (``code`` 0: pass the request on; ``drop``: take it without answering)."""

    code: int = 0
    reason: str = ""
    count: str = ""  # the key counted in status's ``answered``
    allow: bool = False  # send the Allow header
    drop: bool = False


PASS = Answer()


@dataclass(frozen=True)
class Head:
    """What the guard reads of a request's headers, in one pass over its lines."""

    method: str
    twice: str  # the first header of _ONCE present more than once ('' when none is)
    to: str  # the first To value
    via: str  # the first Via value


def read_head(text: str) -> Head:
    """Every request passes here: one split and one loop (regular expressions over the head cost ~10x)."""
    end = text.find("\r\n\r\n")
    head = text if end < 0 else text[:end]
    lines = head.split("\n")
    seen: set[str] = set()
    twice = to = via = ""
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        canonical = _ONCE.get(key)
        if canonical is not None:
            if canonical in seen and not twice:
                twice = canonical
            seen.add(canonical)
            if canonical == "To" and not to:
                to = value
        elif key in ("via", "v") and not via:
            via = value.strip()
    return Head(lines[0].split(" ", 1)[0], twice, to, via)


def duplicated(text: str) -> str:
    """The first header of :data:`_ONCE` present more than once in ``text``'s head ('' when none is)."""
    return read_head(text).twice


def top_via(value: str) -> tuple[str, str]:
    """(sent-by, branch) of the first element of a Via value ('' for what is missing)."""
    first = value.split(",", 1)[0].strip()
    parts = first.split(None, 1)
    sent_by = parts[1].split(";", 1)[0].strip().lower() if len(parts) == 2 else ""
    branch = _BRANCH.search(first)
    return sent_by, branch.group(1) if branch else ""


class Branches:
    """The sent-by of each recent (branch, method): what pjsip's transaction key leaves out."""

    def __init__(self, ttl: float = BRANCH_TTL, limit: int = MAX_BRANCHES) -> None:
        self.ttl, self.limit = ttl, limit
        self.seen: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def other_owner(self, branch: str, method: str, sent_by: str, now: float) -> bool:
        """True when another sent-by owns this (branch, method) now; records nothing."""
        known = self.seen.get((branch, method))
        return known is not None and now - known[1] < self.ttl and known[0] != sent_by

    def other_sender(self, branch: str, method: str, sent_by: str, now: float) -> bool:
        """True when another sent-by used this branch for this method within the last ``ttl`` seconds."""
        key = (branch, method)
        known = self.seen.get(key)
        if known is not None and now - known[1] < self.ttl:
            if known[0] != sent_by:
                return True
            self.seen[key] = (sent_by, now)  # a retransmission: the transaction lives on
            self.seen.move_to_end(key)
            return False
        self.seen[key] = (sent_by, now)
        self.seen.move_to_end(key)
        while len(self.seen) > self.limit:
            self.seen.popitem(last=False)
        return False


def judge(text: str, branches: Branches, now: float) -> Answer:
    """How the guard answers ``text`` (a whole request) received at monotonic time ``now``."""
    head = read_head(text)
    method = head.method
    if head.twice:
        return Answer(drop=True) if method == "ACK" else Answer(400, f"Duplicate {head.twice} Header",
                                                                  "duplicate_header")
    if method == "ACK":  # an ACK of a non-2xx answer shares its INVITE's branch: another sender's ACK would
        sent_by, branch = top_via(head.via)  # end the first sender's transaction (it stops resending)
        return Answer(drop=True) if branches.other_owner(branch, "INVITE", sent_by, now) else PASS
    in_dialog = _TAG.search(head.to) is not None
    if not in_dialog and method in NOT_ALLOWED:
        return Answer(405, "Method Not Allowed", "not_allowed_405", allow=True)
    if not in_dialog and method in DIALOG_ONLY:
        return Answer(481, "Call/Transaction Does Not Exist", "no_dialog_481")
    sent_by, branch = top_via(head.via)
    if branch.startswith("z9hG4bK") and branches.other_sender(branch, method, sent_by, now):
        return Answer(482, "Loop Detected", "branch_in_use")
    return PASS


class Guard:
    """The pjsip module (see the module docstring); keep the object alive while pjsua2 runs."""

    def __init__(self, lib: Any, on_answer: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.lib, self.on_answer, self.clock = lib, on_answer, clock
        self.text = pjc.RdataText(lib)
        self.branches = Branches()
        self.module = pjc.PjModule(lib, b"mod-doorphoned-guard", PRIORITY, self._on_rx_request)
        self.allow_values = [ctypes.create_string_buffer(m.encode()) for m in ALLOW]
        self.allow_head = pjc.Hdr()
        self.allow_list: Any = None

    def register(self) -> None:
        self.module.register()
        self._set_allow()

    def unregister(self) -> None:
        self.module.unregister()

    def _set_allow(self) -> None:
        """The endpoint's Allow capability becomes :data:`ALLOW`; a one-header list is kept for 405s."""
        address = int(self.lib.pjsip_endpt_get_capability(self.module.endpt, pjc.PJSIP_H_ALLOW, None) or 0)
        if not address:
            raise RuntimeError("the endpoint has no Allow capability")
        allow = pjc.ArrayHdr.from_address(address)
        if allow.hdr.type != pjc.PJSIP_H_ALLOW or not 0 < allow.count <= 32 or allow.hdr.name.slen != 5:
            raise RuntimeError("the endpoint's Allow header has an unknown layout")
        for i, value in enumerate(self.allow_values):
            allow.values[i] = pjc.PjStr(ctypes.cast(value, ctypes.c_char_p), len(value.value))
        allow.count = len(self.allow_values)
        # the 405's header list: a list head whose only member is the endpoint's Allow header is not
        # possible (its links belong to the endpoint's list), so the 405 lists a copy of it
        self.allow_copy = pjc.ArrayHdr.from_buffer_copy(allow)
        head = ctypes.addressof(self.allow_head)
        copy = ctypes.addressof(self.allow_copy)
        self.allow_head.prev = self.allow_head.next = copy
        self.allow_copy.hdr.prev = self.allow_copy.hdr.next = head
        self.allow_list = ctypes.byref(self.allow_head)

    def _on_rx_request(self, rdata: int) -> bool:
        text = self.text(rdata)
        if text is None:
            return False
        answer = judge(text, self.branches, self.clock())
        if answer.drop:
            return True
        if not answer.code:
            return False
        self.module.respond(rdata, answer.code, answer.reason, self.allow_list if answer.allow else None)
        self.on_answer(answer.count)
        return True


def install(on_answer: Callable[[str], None], clock: Callable[[], float]) -> Any:
    """The module, registered with the running pjsua endpoint (None when that is not possible)."""
    try:
        module = Guard(pjc.library(), on_answer, clock)
        module.register()
    except (OSError, AttributeError, RuntimeError) as exc:
        log.warning("SIP: the request guard is not active (%s)", exc)
        return None
    return module
