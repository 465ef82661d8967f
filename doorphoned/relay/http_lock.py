"""The HTTP lock-bridge driver: third-party locks (Salto, Nuki, ...) behind a configurable request.

Why so strict about time: a door unit must never hang on a dead bridge. Every request has a total
timeout; a timeout, a refused connection or an unexpected status becomes a :class:`LockError`
the door reports as a denied open and a logged fault. Headers and body may carry credentials for
the bridge, so neither is ever logged; URLs are logged without their query string.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import aiohttp

from doorphoned.core.ports import LockError
from doorphoned.core.urls import safe_url
from doorphoned.relay.config import HttpLockConfig
from doorphoned.relay.driver import DriverHealth, LockDriver

log = logging.getLogger(__name__)


class HttpLockDriver(LockDriver):
    kind = "http"

    def __init__(self, config: HttpLockConfig, door: int, hold_time: float) -> None:
        super().__init__()
        self.config = config
        self.door = door
        self.hold_time = hold_time
        self._session: aiohttp.ClientSession | None = None
        self.last_error = ""

    def set_hold_time(self, seconds: float) -> None:
        self.hold_time = seconds

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout))

    async def unlock(self) -> None:
        await self._request(self.config.url, "unlock")
        self.unlocked = True

    async def lock(self) -> None:
        if self.config.lock_url and self.unlocked:
            await self._request(self.config.lock_url, "lock")
        self.unlocked = False

    def _body(self) -> str:
        return self.config.body.replace("{door}", str(self.door)).replace("{hold_time}", f"{self.hold_time:g}")

    async def _request(self, url: str, action: str) -> None:
        if self._session is None:
            raise LockError("lock_unavailable", "HTTP lock driver is not started")
        started = time.monotonic()
        try:
            async with self._session.request(self.config.method, url, headers=dict(self.config.headers),
                                             data=self._body().encode() or None) as response:
                status = response.status
        except TimeoutError as exc:
            self._fail("lock_bridge_timeout",
                       f"{action}: lock bridge {safe_url(url)} did not answer within {self.config.timeout:g} s", exc)
        except aiohttp.ClientError as exc:
            self._fail("lock_bridge_error", f"{action}: lock bridge {safe_url(url)} failed: {type(exc).__name__}",
                       exc)
        if status not in self.config.ok_status:
            self._fail("lock_bridge_refused", f"{action}: lock bridge {safe_url(url)} answered HTTP {status}", None)
        self.last_error = ""
        log.info("door %d %s via %s in %.0f ms", self.door, action, safe_url(url),
                 (time.monotonic() - started) * 1000)

    def _fail(self, reason: str, detail: str, exc: BaseException | None) -> None:
        self.last_error = detail
        raise LockError(reason, detail) from exc

    def describe(self) -> dict[str, object]:
        return {"driver": "http", "url": safe_url(self.config.url), "method": self.config.method,
                "timeout": self.config.timeout, "last_error": self.last_error}

    async def check(self) -> DriverHealth:
        """Reach the bridge's TCP port without sending the unlock request."""
        parts = urlsplit(self.config.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), self.config.timeout)
        except (OSError, TimeoutError) as exc:
            return DriverHealth(False, f"lock bridge {parts.hostname}:{port} unreachable: {exc or 'timeout'}")
        writer.close()
        return DriverHealth(True, f"lock bridge {parts.hostname}:{port} reachable")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
