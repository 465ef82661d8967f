"""The HTTP lock driver against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest

from doorphoned.core.ports import LockError
from doorphoned.core.urls import redact_url, safe_url
from doorphoned.relay.config import HttpLockConfig
from doorphoned.relay.http_lock import HttpLockDriver
from tests.bridge import LockBridge


def run(coro):
    return asyncio.run(coro)


async def unlock_once(config: HttpLockConfig) -> HttpLockDriver:
    driver = HttpLockDriver(config, door=3, hold_time=4)
    await driver.start()
    try:
        await driver.unlock()
    finally:
        await driver.close()
    return driver


def test_unlock_sends_the_configured_request():
    with LockBridge() as bridge:
        cfg = HttpLockConfig(url=f"{bridge.url}/locks/open?token=t0k", method="PUT",
                             headers={"Authorization": "Bearer abc"}, body='{"door": {door}, "hold": {hold_time}}')
        driver = run(unlock_once(cfg))
    assert driver.unlocked
    [req] = bridge.requests
    assert req["method"] == "PUT" and req["path"] == "/locks/open?token=t0k"
    assert req["headers"]["Authorization"] == "Bearer abc"
    assert req["body"] == '{"door": 3, "hold": 4}'


def test_timeout_is_a_lock_error_within_the_limit():
    with LockBridge() as bridge:
        bridge.delay = 3
        cfg = HttpLockConfig(url=f"{bridge.url}/open", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(LockError) as err:
            run(unlock_once(cfg))
        elapsed = time.monotonic() - started
    assert err.value.reason == "lock_bridge_timeout"
    assert "did not answer within 0.5 s" in err.value.detail
    assert elapsed < 2.5


def test_unexpected_status_is_refused():
    with LockBridge() as bridge:
        bridge.status = 503
        with pytest.raises(LockError) as err:
            run(unlock_once(HttpLockConfig(url=f"{bridge.url}/open")))
    assert err.value.reason == "lock_bridge_refused" and "HTTP 503" in err.value.detail


def test_connection_refused():
    with LockBridge() as bridge:
        url = f"{bridge.url}/open"
    with pytest.raises(LockError) as err:  # server closed: nothing listens on that port now
        run(unlock_once(HttpLockConfig(url=url, timeout=1)))
    assert err.value.reason in ("lock_bridge_error", "lock_bridge_timeout")


def test_lock_url_is_called_to_relock():
    async def scenario(bridge):
        driver = HttpLockDriver(HttpLockConfig(url=f"{bridge.url}/open", lock_url=f"{bridge.url}/close"), 1, 3)
        await driver.start()
        await driver.unlock()
        await driver.lock()
        await driver.lock()  # already locked: no second request
        health = await driver.check()
        await driver.close()
        return health
    with LockBridge() as bridge:
        health = run(scenario(bridge))
    assert [r["path"] for r in bridge.requests] == ["/open", "/close"]
    assert health.ok


def test_safe_url_drops_credentials_and_query():
    assert safe_url("https://user:pw@bridge.local:8443/api/open?key=secret") == "https://bridge.local:8443/api/open"


def test_redact_url_keeps_what_installers_need():
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/live?x=1") == "rtsp://admin:***@10.0.0.5:554/live?***"
    assert redact_url("http://127.0.0.1:8090/camera.mjpg") == "http://127.0.0.1:8090/camera.mjpg"
