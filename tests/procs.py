"""Real processes for end-to-end tests: hw-sim, doorphoned, and the two CLIs, driven as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hwsim.cli import HwsimClientError, request

from doorphoned.control.client import ControlClient
from tests.sipp import sip_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class HwSim:
    def __init__(self, socket_path: Path) -> None:
        self.socket = socket_path
        self.proc: subprocess.Popen[str] | None = None
        self.log = socket_path.with_suffix(".log")
        self.keypad_link = socket_path.parent / "keypad.tty"
        self.nfc_port = 0
        self.camera_port = 0
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        self.proc = subprocess.Popen([str(BIN / "hwsim"), "--socket", str(self.socket), "run", "-v",
                                      "--nfc-port", str(self.nfc_port), "--camera-port", str(self.camera_port)],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"), text=True)
        wait_for(self.socket.exists, timeout=60, what="hw-sim socket")  # a loaded machine starts Python slowly
        self.info = wait_for(self._info, timeout=30, what="hw-sim answering on its socket")
        self.nfc_port = int(self.info["nfc"]["device"].rsplit(":", 1)[1])  # kept across restarts
        self.camera_port = int(self.info["camera"]["url"].split(":")[2].split("/")[0])

    def _info(self) -> dict[str, Any] | None:
        """What ``hwsim info --json`` prints; None while the socket file exists but nobody listens on it yet, or
        while its fake BlueZ is still starting (neither a bus nor an error yet)."""
        try:
            info = {k: v for k, v in request(self.socket, {"op": "info"}).items() if k != "ok"}
        except HwsimClientError:
            return None
        ble = info.get("ble", {})
        return info if ble.get("bus") or ble.get("error") else None

    def cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(BIN / "hwsim"), "--socket", str(self.socket), *args],
                                capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"hwsim {' '.join(args)} failed: {result.stderr}")
        return result

    def watch(self) -> Any:
        """A line stream of hw-sim's events (relay changes with times), as the benches read it."""
        watch = socket.socket(socket.AF_UNIX)
        watch.connect(str(self.socket))
        watch.sendall(b'{"op": "watch"}\n')
        events = watch.makefile("rb")
        events.readline()
        return events

    def control(self) -> tuple[socket.socket, Any]:
        """A raw control connection (socket, reply lines) for driving inputs without a process per call."""
        control = socket.socket(socket.AF_UNIX)
        control.connect(str(self.socket))
        return control, control.makefile("rb")

    def relays(self) -> list[dict[str, Any]]:
        """The relays as ``hwsim relays --json`` prints them, asked over the socket: tests poll this in loops, and a
        process per poll was a tenth of a second of CPU each (the CLI itself is tested in test_hwsim_cli.py)."""
        return request(self.socket, {"op": "relays"})["relays"]

    def relay(self, n: int) -> dict[str, Any]:
        return next(r for r in self.relays() if r["relay"] == n)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Daemon:
    """doorphoned --sim (or --config FILE) with its state under ``home``; READY=1 read from NOTIFY_SOCKET."""

    def __init__(self, home: Path, hwsim: HwSim, config: Path | None = None, env: dict[str, str] | None = None):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.hwsim = hwsim
        self.config = config
        self.state_dir = home / "var"
        self.socket = self.state_dir / "control.sock"
        self.extra_env = env or {}
        self.sip_ports = sip_env()  # chosen once: a restart keeps its ports
        self.proc: subprocess.Popen[str] | None = None
        self.notify_path = home / "notify.sock"
        self.notify: socket.socket | None = None
        self.messages: list[str] = []
        self.stderr_path = home / "daemon.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOORPHONED_")}
        if self.config is None:
            env["DOORPHONED_DAEMON_STATE_DIR"] = str(self.state_dir)
            env["DOORPHONED_GPIO_HWSIM_SOCKET"] = str(self.hwsim.socket)
            env["DOORPHONED_KEYPAD_PORT"] = str(self.hwsim.keypad_link)
            env["DOORPHONED_NFC_DEVICE"] = self.hwsim.info["nfc"]["device"]
            env["DOORPHONED_CAMERA_SOURCE"] = self.hwsim.info["camera"]["url"]
        env.update(self.sip_ports)  # SIP (when a config enables it) on free loopback ports: tests run in parallel
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        env.update(self.extra_env)
        return env

    def argv(self) -> list[str]:
        source = ["--config", str(self.config)] if self.config else ["--sim"]
        return [str(BIN / "doorphoned"), *source]

    def start(self, wait_ready: bool = True) -> None:
        if self.notify is None:
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify.bind(str(self.notify_path))
        self.proc = subprocess.Popen(self.argv(), env=self.env(), stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_path.open("a"), text=True, cwd=self.home)
        if wait_ready:
            self.wait_message("READY=1")

    def wait_message(self, wanted: str, timeout: float = 60.0) -> str:
        assert self.notify is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(0.2)
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"doorphoned exited with {self.proc.returncode}: {self.log_text()}") from None
                continue
            self.messages.append(data)
            if wanted in data.split("\n"):
                return data
        raise AssertionError(f"no {wanted} from doorphoned within {timeout} s; log: {self.log_text()}")

    def log_text(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def ctl_argv(self) -> list[str]:
        return [str(BIN / "doorphonectl"), "--socket", str(self.socket)]

    def ctl(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.ctl_argv(), *args], capture_output=True, text=True, timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"doorphonectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json").stdout)

    def call(self, cmd: str, **args: Any) -> Any:
        """One control command over the socket, in this process: for the waits that poll the daemon's state.

        A ``doorphonectl`` process per poll is a tenth of a second of CPU, and a wait polls dozens of times; what
        a test asserts about the CLI still goes through ``ctl``. The result is what ``--json`` would print.
        """
        with ControlClient(self.socket) as client:
            return client.call(cmd, **args)

    def door_log(self, **filters: Any) -> list[dict[str, Any]]:
        extra = [a for k, v in filters.items() for a in (f"--{k}", str(v))]
        return self.ctl_json("log", "doors", "--limit", "1000", *extra)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.notify is not None:
            self.notify.close()
            self.notify = None
            self.notify_path.unlink(missing_ok=True)
