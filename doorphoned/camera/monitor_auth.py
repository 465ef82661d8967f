"""Who may watch the monitor stream: the installer's account, one-time session grants, the viewer limit.

Pure bookkeeping, no GStreamer: :class:`monitor.MonitorServer` asks it from the GLib thread whether a
request from an RTSP client may go on, and tells it when a client's session starts and ends. Kept apart
so the rules (a grant serves one session only, the viewer limit, caps) are tested without a pipeline.

A grant is a random user name and password that ``gst-rtsp-server``'s digest auth knows until the grant
is spent: it binds to the first RTSP client that sets up a session with it; any other client presenting
it is refused (401), and once that client's session ends (or the grant is revoked, or it expires unused)
the credential is removed from the server, so using it again is a plain digest failure (401).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

INSTALLER = "installer"
GRANT_PREFIX = "s-"
MAX_PURPOSE = 64
MAX_GRANTS = 64  # live (issued, not yet spent or expired) grants: a burst of monitor.start cannot grow memory


@dataclass
class SessionGrant:
    """A one-time credential for one RTSP session (``url`` embeds it; ``user``/``password`` apart for
    clients that take them separately). ``expires`` is wall-clock epoch seconds: unused by then, it dies."""

    id: str
    purpose: str
    user: str
    password: str
    url: str
    cap_seconds: int
    expires: float
    client: Any = field(default=None, repr=False)  # the RTSP client it is bound to, once set up
    spent: bool = False

    def public(self) -> dict[str, Any]:
        """What the control answers with (the caller hands the URL to the viewer that asked for it)."""
        return {"id": self.id, "purpose": self.purpose, "user": self.user, "password": self.password,
                "url": self.url, "cap_seconds": self.cap_seconds, "expires": round(self.expires, 3)}


@dataclass
class ViewerState:
    """One admitted RTSP client: what it authenticated as and since when."""

    id: int
    purpose: str
    remote: str
    since: float
    cap_seconds: int
    grant: SessionGrant | None = None


class AccessError(ValueError):
    """A grant request the module refuses (bad purpose or cap): said to the caller, nothing changes."""


def check_purpose(purpose: object) -> str:
    """A purpose is a short printable label (``call``, ``cloud``): it is shown in ``viewers()`` and logs."""
    if not isinstance(purpose, str) or not 0 < len(purpose) <= MAX_PURPOSE:
        raise AccessError(f"purpose must be a string of 1..{MAX_PURPOSE} characters")
    if not purpose.isprintable() or any(ord(c) > 0x7E for c in purpose):
        raise AccessError("purpose must be printable ASCII")
    return purpose


def check_cap(cap: object, ceiling: int) -> int:
    """A cap is whole seconds, 1 .. ``ceiling`` (bools and floats are refused, not rounded)."""
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= ceiling:
        raise AccessError(f"cap_seconds must be an integer from 1 to {ceiling}")
    return cap


class Access:
    """The grants and admitted viewers; every method runs on the server's GLib thread (or before start)."""

    def __init__(self, max_viewers: int, grant_ttl: int) -> None:
        self.max_viewers = max_viewers
        self.grant_ttl = grant_ttl
        self.grants: dict[str, SessionGrant] = {}  # by user name
        self.viewers: dict[int, ViewerState] = {}  # by id(client)
        self._next_viewer = 1

    def new_grant(self, purpose: str, cap: int, url_for: Any) -> SessionGrant:
        """A fresh random credential; ``url_for(user, password)`` builds the URL that embeds it. Refused
        past :data:`MAX_GRANTS` live grants (each is a digest account until spent or expired)."""
        if len(self.grants) >= MAX_GRANTS:
            raise AccessError(f"{MAX_GRANTS} monitor URLs are live already; try again when one is used or expired")
        grant_id = secrets.token_hex(6)
        user, password = GRANT_PREFIX + grant_id, secrets.token_urlsafe(18)
        grant = SessionGrant(grant_id, purpose, user, password, url_for(user, password), cap,
                             time.time() + self.grant_ttl)
        self.grants[user] = grant
        return grant

    def find(self, grant_id: str) -> SessionGrant | None:
        return next((g for g in self.grants.values() if g.id == grant_id), None)

    def may_use(self, user: str | None, client: Any) -> bool:
        """Whether ``client`` may go on as ``user``: a grant is for the client that first set up with it."""
        if user is None:
            return False
        if not user.startswith(GRANT_PREFIX):
            return True
        grant = self.grants.get(user)
        return grant is not None and not grant.spent and grant.client in (None, client)

    def full(self, client: Any) -> bool:
        """Whether admitting ``client`` would pass the viewer limit (an admitted client is never 'full')."""
        return id(client) not in self.viewers and len(self.viewers) >= self.max_viewers

    def admit(self, client: Any, user: str, remote: str, installer_cap: int) -> ViewerState:
        """Record ``client`` as a viewer; a grant it used is bound to it from now on."""
        grant = self.grants.get(user)
        if grant is not None:
            grant.client = client
        viewer = ViewerState(self._next_viewer, grant.purpose if grant else INSTALLER, remote, time.time(),
                             grant.cap_seconds if grant else installer_cap, grant)
        self._next_viewer += 1
        self.viewers[id(client)] = viewer
        return viewer

    def leave(self, client: Any) -> ViewerState | None:
        """``client`` went away: its viewer entry goes, and the grant it used is spent."""
        viewer = self.viewers.pop(id(client), None)
        if viewer is not None and viewer.grant is not None:
            self.spend(viewer.grant)
        return viewer

    def spend(self, grant: SessionGrant) -> None:
        grant.spent = True
        self.grants.pop(grant.user, None)
