"""Fixtures for the cloud tests: a real mosquitto (TLS, password file, ACL) and a unit joined to it."""

from __future__ import annotations

import pytest

from tests.mqtt import Broker, make_certs
from tests.phones import feature
from tests.procs import wait_for


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker(tmp_path, certs):
    b = Broker(tmp_path / "broker", certs)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory, certs):
    """A broker for the test module's shared unit (``shared_daemon_factory``)."""
    b = Broker(tmp_path_factory.mktemp("broker"), certs)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def unit(daemon_factory, broker):
    d = daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=10, what="cloud connected")
    return d


@pytest.fixture
def ble_daemon(daemon_factory, hwsim):
    if not hwsim.info["ble"]["bus"]:
        pytest.fail(f"hw-sim runs no fake BlueZ: {hwsim.info['ble']['error']}")
    d = daemon_factory(env={"DOORPHONED_BLE_ENABLED": "true", "DOORPHONED_BLE_BUS": hwsim.info["ble"]["bus"],
                            "DOORPHONED_BLE_DOORS": "[1]"})
    d.start()
    wait_for(lambda: feature(d, "ble")["reader"] == "ok", timeout=30, what="BLE reader scanning")
    return d
