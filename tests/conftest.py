"""Fixtures that start the real processes: hw-sim and doorphoned, each in its own temp dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis's per-example deadline (200 ms) is a timing assertion: on a loaded 2-core machine a pure
# example can take longer and fail a correct test. Speed is measured in bench/, never here.
settings.register_profile("doorphoned", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("doorphoned")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Daemon, HwSim  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (20-70 s each) go first, in a stable order: pytest-xdist hands tests out in
    collection order, and a 70 s test handed out near the end keeps one worker busy alone while the other
    has finished (minutes of the run's wall time)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def hwsim(tmp_path: Path):
    sim = HwSim(tmp_path / "hwsim.sock")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def daemon_factory(tmp_path: Path, hwsim: HwSim):
    started: list[Daemon] = []

    def make(config: Path | None = None, env: dict[str, str] | None = None, name: str = "d") -> Daemon:
        daemon = Daemon(tmp_path / name, hwsim, config=config, env=env or {})
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


@pytest.fixture
def daemon(daemon_factory):
    d = daemon_factory()
    d.start()
    return d


def _clear_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DOORPHONED_") or name in ("HWSIM_SOCKET", "DOORPHONECTL_SOCKET", "NOTIFY_SOCKET"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch):
    _clear_stray_env(monkeypatch)


# One hw-sim and its daemons for a whole test module: for tests that only read, or whose effects are refusals
# that change nothing (each still asserts that nothing changed). Starting hw-sim, a daemon and its workers costs
# about 2 s of CPU; a dozen parametrized refusals each starting their own were minutes of the suite's CPU.
@pytest.fixture(scope="module")
def shared_hwsim(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:  # module fixtures start before the function-scoped clean-up
        _clear_stray_env(patch)
        sim = HwSim(tmp_path_factory.mktemp("shared") / "hwsim.sock")
        sim.start()
        yield sim
        sim.stop()


@pytest.fixture(scope="module")
def shared_daemon_factory(shared_hwsim: HwSim):
    """Like ``daemon_factory``, for daemons that live as long as the test module."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None, name: str = "d") -> Daemon:
        daemon = Daemon(shared_hwsim.socket.parent / name, shared_hwsim, env=env or {})
        started.append(daemon)
        return daemon

    with pytest.MonkeyPatch.context() as patch:
        _clear_stray_env(patch)
        yield make
    for daemon in started:
        daemon.kill()
