"""Admission of incoming INVITEs before pjsua gives them sockets (pure logic, no pjsua2).

Why this exists: pjlib's ioqueue in the pjsua2 wheel has a fixed table of 64 socket handles
(``PJ_IOQUEUE_MAX_HANDLES``), and pjsua opens two sockets (RTP and RTCP) for every incoming INVITE
*before* the application hears of it; a closed socket's handle only returns to the table 500 ms later
(``PJ_IOQUEUE_KEY_FREE_DELAY``). About 30 INVITEs in half a second, even ones answered 403 at once,
empty the table and pjlib aborts the process on a failed assertion. So every INVITE is judged here,
in pjsua2's ``onSelectAccount`` (called before media is created): what is not admitted goes to an
account whose media is pjmedia's loop transport (no socket), and is answered from there. Admitted
calls are bounded in number and in rate, so the sockets they hold stay far below the table's size.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from doorphoned.sip.backend import peer_allowed, source_host

MAX_LIVE_CALLS = 3  # incoming calls with media at once: the wheel has 4 call slots (PJSUA_MAX_CALLS)
MAX_NEW_PER_SECOND = 10  # calls given media per second: at most ~10 handles wait out their 500 ms
PER_SOURCE_LIVE = 2  # live calls one allowed address may hold (one monitor cannot take every line)
RETRY_AFTER = 5  # seconds, in a 503's Retry-After
_SINGLE = {"from": "from", "f": "from", "to": "to", "t": "to", "call-id": "call-id", "i": "call-id",
           "cseq": "cseq"}
_HEADER = re.compile(r"^([A-Za-z-]+)[ \t]*:", re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    """How to answer an INVITE that is not admitted (``code`` 0: admitted)."""

    code: int = 0
    reason: str = ""  # not_allowed | malformed | busy | overloaded | rate_limited
    retry_after: int = 0

    @property
    def admitted(self) -> bool:
        return self.code == 0


ADMIT = Verdict()


def duplicated_header(message: str) -> str:
    """The first of From/To/Call-ID/CSeq present more than once in ``message``'s head (RFC 3261 §7.3.1:
    each may appear once; a second From could make caller checks read one From and log another)."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0]
    seen: set[str] = set()
    for match in _HEADER.finditer(head):
        name = _SINGLE.get(match.group(1).lower())
        if name is None:
            continue
        if name in seen:
            return name
        seen.add(name)
    return ""


@dataclass
class Shedder:
    """Decides, per INVITE, admit or refuse with a code; counts what it decided."""

    allowed: frozenset[str]
    max_live: int = MAX_LIVE_CALLS
    max_per_second: int = MAX_NEW_PER_SECOND
    per_source: int = PER_SOURCE_LIVE
    recent: deque[float] = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=dict)

    def verdict(self, source: str, message: str, live: list[str], now: float) -> Verdict:
        """``source`` is ``host:port``; ``message`` the whole request; ``live`` the addresses of the calls
        that hold media now; ``now`` a monotonic time."""
        found = self._judge(source, message, live, now)
        key = found.reason or "admitted"
        self.counts[key] = self.counts.get(key, 0) + 1
        return found

    def _judge(self, source: str, message: str, live: list[str], now: float) -> Verdict:
        if not peer_allowed(source, self.allowed):
            return Verdict(403, "not_allowed")
        if duplicated_header(message):
            return Verdict(400, "malformed")
        if len(live) >= self.max_live:
            return Verdict(486, "busy")
        while self.recent and now - self.recent[0] >= 1.0:
            self.recent.popleft()
        if len(self.recent) >= self.max_per_second:
            return Verdict(503, "overloaded", retry_after=1)
        if live.count(source_host(source)) >= self.per_source:
            return Verdict(503, "rate_limited", retry_after=RETRY_AFTER)
        self.recent.append(now)
        return ADMIT

    def outgoing(self, now: float) -> None:
        """An outgoing call takes media too: it counts towards the per-second bound."""
        self.recent.append(now)
