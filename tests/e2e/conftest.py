"""Fixtures for the cloud tests: a real mosquitto (TLS, password file, ACL) and a unit joined to it."""

from __future__ import annotations

import pytest

from tests.mqtt import Broker, make_certs
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


@pytest.fixture
def unit(daemon_factory, broker):
    d = daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    d.start()
    wait_for(lambda: d.ctl_json("cloud", "status")["connected"], timeout=10, what="cloud connected")
    return d
