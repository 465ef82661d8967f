"""The hw-sim process: owns every simulated line and records what the daemon does to the relays.

One asyncio loop, one Unix socket, JSON lines. Three kinds of client speak on it:

* the ``hwsim`` pin factory inside doorphoned (``hello`` with role ``gpio``): it drives outputs
  and is told of every input change;
* the ``hwsim`` CLI (one request, one reply): drives inputs, reads relay history;
* watchers (``watch``): a stream of relay and input changes, for benches and live views.

Like a real relay board, a line is only energised while a live process drives it: when the
daemon's connection drops (crash, ``kill -9``), every line it drove is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsim.bluez import FakeBluez
from hwsim.board import Board, BoardError
from hwsim.camera import CameraError, SimCamera
from hwsim.keypad import SimKeypad
from hwsim.nfc import TAP_TIMEOUT, NfcError, SimNfcCard
from hwsim.phone import PhoneBook, PhoneError
from hwsim.phoneops import PhoneService

log = logging.getLogger("hwsim")

MAX_LINE = 64 * 1024
PULSES_KEPT = 200


@dataclass
class Pulse:
    start: float
    start_mono: float
    end: float | None = None
    end_mono: float | None = None

    def as_dict(self) -> dict[str, Any]:
        duration = None if self.end_mono is None else round((self.end_mono - self.start_mono) * 1000, 1)
        return {"start": self.start, "end": self.end, "duration_ms": duration}


@dataclass
class RelayState:
    n: int
    pin: int
    active_high: bool
    energised: bool = False
    pulses: deque[Pulse] = field(default_factory=lambda: deque(maxlen=PULSES_KEPT))
    energise_count: int = 0

    def as_dict(self, driven: bool) -> dict[str, Any]:
        return {
            "relay": self.n,
            "pin": self.pin,
            "active_level": "high" if self.active_high else "low",
            "driven": driven,
            "energised": self.energised,
            "state": "energised" if self.energised else "released",
            "energise_count": self.energise_count,
            "pulses": [p.as_dict() for p in self.pulses],
        }


class Simulator:
    """The board's state machine; the socket handlers only translate JSON to these calls."""

    def __init__(self, board: Board, keypad: SimKeypad, nfc: SimNfcCard, camera: SimCamera) -> None:
        self.board = board
        self.keypad = keypad
        self.nfc = nfc
        self.camera = camera
        self.inputs: dict[int, bool] = board.idle_levels()
        self.outputs: dict[int, tuple[object, bool]] = {}  # pin -> (owner, level)
        self.relays = {r.pin: RelayState(r.n, r.pin, r.active_high) for r in board.relays}
        self.gpio_clients: set[Client] = set()
        self.watchers: set[Client] = set()

    # ---- outputs (driven by the daemon)
    def drive(self, owner: object, pin: int, level: bool) -> None:
        self.outputs[pin] = (owner, level)
        self._update_relay(pin)

    def release(self, owner: object, pin: int) -> None:
        if pin in self.outputs and self.outputs[pin][0] is owner:
            del self.outputs[pin]
            self._update_relay(pin)

    def release_all(self, owner: object) -> None:
        for pin in [p for p, (o, _) in self.outputs.items() if o is owner]:
            self.release(owner, pin)

    def _update_relay(self, pin: int) -> None:
        relay = self.relays.get(pin)
        if relay is None:
            return
        driven = self.outputs.get(pin)
        energised = driven is not None and driven[1] == relay.active_high
        if energised == relay.energised:
            return
        now, mono = time.time(), time.monotonic()
        relay.energised = energised
        if energised:
            relay.energise_count += 1
            relay.pulses.append(Pulse(now, mono))
        elif relay.pulses and relay.pulses[-1].end is None:
            relay.pulses[-1].end, relay.pulses[-1].end_mono = now, mono
        log.info("relay %d %s", relay.n, "energised" if energised else "released")
        self._notify({"ev": "relay", "relay": relay.n, "energised": energised, "t": now, "mono": mono})

    # ---- inputs (driven by people, through the CLI)
    def set_input(self, pin: int, level: bool) -> None:
        if self.inputs.get(pin) == level:
            return
        self.inputs[pin] = level
        message = {"ev": "level", "pin": pin, "level": int(level)}
        for client in list(self.gpio_clients):
            client.send(message)
        self._notify({"ev": "input", "pin": pin, "level": int(level), "t": time.time()})

    def door(self, n: int, is_open: bool) -> None:
        lines = self.board.door(n)
        if lines.sensor_pin is None:
            raise BoardError(f"door {n} has no sensor on this board")
        self.set_input(lines.sensor_pin, lines.open_high if is_open else not lines.open_high)

    def exit_pin(self, n: int) -> tuple[int, bool]:
        lines = self.board.door(n)
        if lines.exit_pin is None:
            raise BoardError(f"door {n} has no exit button on this board")
        return lines.exit_pin, lines.pressed_high

    def tamper(self, on: bool) -> None:
        if self.board.tamper_pin is None:
            raise BoardError("this board has no tamper switch")
        self.set_input(self.board.tamper_pin, self.board.tamper_high if on else not self.board.tamper_high)

    def presence(self, on: bool) -> None:
        if self.board.presence_pin is None:
            raise BoardError("this board has no presence input")
        self.set_input(self.board.presence_pin, self.board.presence_high if on else not self.board.presence_high)

    def relay_report(self) -> list[dict[str, Any]]:
        return [r.as_dict(r.pin in self.outputs) for r in sorted(self.relays.values(), key=lambda r: r.n)]

    def input_report(self) -> dict[str, Any]:
        doors = []
        for d in self.board.doors:
            doors.append({
                "door": d.n,
                "open": None if d.sensor_pin is None else self.inputs[d.sensor_pin] == d.open_high,
                "exit_pressed": None if d.exit_pin is None else self.inputs[d.exit_pin] == d.pressed_high,
            })
        tamper = None if self.board.tamper_pin is None else self.inputs[self.board.tamper_pin] == self.board.tamper_high
        calls = [{"button": b.n, "pressed": self.inputs[b.pin] == b.pressed_high} for b in self.board.call_buttons]
        pin = self.board.presence_pin
        presence = None if pin is None else self.inputs[pin] == self.board.presence_high
        return {"doors": doors, "tamper": tamper, "call_buttons": calls, "presence": presence,
                "levels": {str(p): int(v) for p, v in sorted(self.inputs.items())},
                "gpio_clients": len(self.gpio_clients)}

    def info(self) -> dict[str, Any]:
        """Where the daemon finds each simulated device (tests and tools point the daemon here)."""
        return {"keypad": {"port": str(self.keypad.link.absolute()), "device": self.keypad.device,
                           "plugged": self.keypad.plugged},
                "nfc": {"device": self.nfc.device},
                "camera": self.camera.describe()}

    def _notify(self, message: dict[str, Any]) -> None:
        for watcher in list(self.watchers):
            watcher.send(message)


class Client:
    """One connection; writes are queued so a slow reader never blocks the simulator."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write((json.dumps(message) + "\n").encode())


def _number(req: dict[str, Any], key: str, default: float) -> float:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CameraError(f"{key} must be a number")
    return float(value)


def _flag(req: dict[str, Any], key: str) -> bool:
    value = req.get(key)
    if not isinstance(value, bool):
        raise CameraError(f"{key} must be true or false")
    return value


_CAMERA_SETTINGS: dict[str, Any] = {
    "move": lambda cam, req: cam.show_moving(_number(req, "speed", 200), int(_number(req, "size", 120))),
    "sequence": lambda cam, req: cam.show_sequence(Path(str(req["path"]))),
    "fps": lambda cam, req: cam.set_fps(int(_number(req, "fps", 15))),
    "ramp": lambda cam, req: cam.set_ramp(_number(req, "delta", 0), _number(req, "seconds", 10)),
    "noise": lambda cam, req: cam.set_noise(_number(req, "sigma", 0)),
    "stamp": lambda cam, req: cam.set_stamp(_flag(req, "on")),
}


class Server:
    """Serves a :class:`Simulator` on a Unix socket (explicit start/stop lifecycle)."""

    def __init__(self, sim: Simulator, path: Path) -> None:
        self.sim = sim
        self.path = path
        self.phones = PhoneService(PhoneBook(path.parent / "phones"), sim.nfc, FakeBluez(path.parent))
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.sim.camera.start()  # first: a taken port must fail before anything else is touched
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o660)
        self.sim.keypad.plug()
        await self.phones.start()
        log.info("hw-sim listening on %s", self.path)

    async def stop(self) -> None:
        self.sim.camera.stop()
        await self.phones.stop()
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server = None
        self.sim.keypad.unplug()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        client = Client(writer)
        try:
            while line := await reader.readline():
                reply = self._handle(client, line)
                if reply is not None:
                    client.send(reply)
                    await writer.drain()
        except (asyncio.LimitOverrunError, ValueError):
            # A line over the limit: say so (the client may still read it), then hang up.
            client.send({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._drop(client)
            writer.close()
            self._tasks.discard(task)

    def _camera(self, req: dict[str, Any]) -> None:
        camera, action = self.sim.camera, req.get("action")
        if action == "qr":
            text = req["text"]
            if not isinstance(text, str):
                raise CameraError("text must be a string")
            if len(text) > 2000:
                raise CameraError("at most 2000 characters fit a QR code shown here")
            camera.show_qr(text)
        elif action == "show":
            camera.show_image(Path(str(req["path"])))
        elif action == "clear":
            camera.clear()
        elif action in ("on", "off"):
            (camera.start if action == "on" else camera.stop)()
        elif action in _CAMERA_SETTINGS:
            _CAMERA_SETTINGS[action](camera, req)
        else:
            raise ValueError(f"unknown camera action {action!r}")

    def _camera_face(self, client: Client, req: dict[str, Any]) -> None:
        kind, path = req.get("kind"), req.get("path")
        if kind not in ("live", "photo") or not isinstance(path, str):
            raise CameraError("camera face needs kind live or photo and a path")
        width = _number(req, "face_width", 200)
        if not (math.isfinite(width) and width == int(width)):
            raise CameraError("face_width must be a whole number of pixels")
        screen = req.get("screen", False)
        if not isinstance(screen, bool):
            raise CameraError("screen must be true or false")
        self._spawn(self._show_face(client, self.sim.camera.generation, (kind, Path(path), int(width), screen)))

    async def _show_face(self, client: Client, generation: int, what: tuple[str, Path, int, bool]) -> None:
        camera = self.sim.camera
        try:
            scene = await asyncio.to_thread(camera.face_scene, *what)
        except CameraError as exc:
            client.send({"ok": False, "error": str(exc)})
            return
        if camera.generation != generation:
            client.send({"ok": False, "error": "another scene was chosen meanwhile: this face is not shown"})
            return
        camera.set_scene(scene)
        client.send({"ok": True, "showing": camera.showing})

    async def _tap(self, client: Client, uid: str, timeout: float, hold: float) -> None:
        try:
            if hold > 0:
                reads = await asyncio.to_thread(self.sim.nfc.hold, uid, min(hold, 120.0))
                client.send({"ok": True, "reads": reads} if reads else
                            {"ok": False, "error": f"no reader picked up card {uid} within {hold:g} s"})
                return
            read = await asyncio.to_thread(self.sim.nfc.tap, uid, min(max(timeout, 0.5), 30.0))
        except NfcError as exc:
            client.send({"ok": False, "error": str(exc)})
            return
        client.send({"ok": True, "read": read} if read else
                    {"ok": False, "error": f"no reader picked up card {uid} within {timeout:g} s"})

    def _keypad(self, req: dict[str, Any]) -> None:
        keys = req["keys"]
        if not isinstance(keys, str):
            raise ValueError("keys must be a string")
        if len(keys) > 4096:
            raise ValueError("at most 4096 keys at once")
        self.sim.keypad.press(keys)

    def _nfc_tap(self, client: Client, req: dict[str, Any]) -> None:
        if not isinstance(req["uid"], str):  # 11979847 is not the card 11979847 (hex) by accident
            raise NfcError("UID must be a string of 4 or 7 bytes of hex, e.g. 04A1B2C3")
        uid = req["uid"].replace(":", "").upper()
        if not re.fullmatch(r"[0-9A-F]{8}|[0-9A-F]{14}", uid):
            raise NfcError("UID must be 4 or 7 bytes of hex, e.g. 04A1B2C3")
        timeout, hold = float(req.get("timeout", TAP_TIMEOUT)), float(req.get("hold", 0))
        if not (math.isfinite(timeout) and math.isfinite(hold)):
            raise ValueError("timeout and hold must be finite numbers")
        self._spawn(self._tap(client, uid, timeout, hold))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self, client: Client) -> None:
        if client in self.sim.gpio_clients:
            self.sim.gpio_clients.discard(client)
            self.sim.release_all(client)
            log.warning("gpio client gone: its lines are released")
        self.sim.watchers.discard(client)

    def _handle(self, client: Client, line: bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            return self._dispatch(client, request)
        except (BoardError, NfcError, CameraError, PhoneError) as exc:
            return {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        except OSError as exc:
            return {"ok": False, "error": str(exc)}

    def _dispatch(self, client: Client, req: dict[str, Any]) -> dict[str, Any] | None:
        op = req.get("op")
        sim = self.sim
        if op == "set":  # hot path: no reply, the factory does not wait
            sim.drive(client, int(req["pin"]), bool(req["level"]))
            return None
        if op == "function":
            if req["function"] == "output":
                sim.drive(client, int(req["pin"]), bool(req.get("level", 0)))
            else:
                sim.release(client, int(req["pin"]))
            return None
        if op == "hello":
            if req.get("role") == "gpio":
                sim.gpio_clients.add(client)
            return {"ev": "inputs", "levels": {str(p): int(v) for p, v in sim.inputs.items()}}
        if op == "watch":
            sim.watchers.add(client)
            return {"ok": True, "watching": True}
        if op == "door":
            sim.door(int(req["door"]), bool(req["open"]))
            return {"ok": True}
        if op == "press":
            if req.get("kind") == "call":
                button = sim.board.call_button(int(req["door"]))
                pin, pressed_high = button.pin, button.pressed_high
            else:
                pin, pressed_high = sim.exit_pin(int(req["door"]))
            hold = min(max(float(req.get("hold", 0.2)), 0.0), 60.0)
            sim.set_input(pin, pressed_high)
            loop = asyncio.get_running_loop()
            loop.call_later(hold, sim.set_input, pin, not pressed_high)
            return {"ok": True}
        if op == "tamper":
            sim.tamper(bool(req["on"]))
            return {"ok": True}
        if op == "presence":
            sim.presence(bool(req["on"]))
            return {"ok": True}
        if op == "keypad":
            self._keypad(req)
            return {"ok": True}
        if op == "keypad_plug":
            (sim.keypad.plug if req["plugged"] else sim.keypad.unplug)()
            return {"ok": True}
        if op == "nfc_tap":
            self._nfc_tap(client, req)
            return None  # answered when the tap is over
        if op == "camera" and req.get("action") == "face":
            self._camera_face(client, req)
            return None  # answered once the face is found (a thread: the loop keeps serving the relays)
        if op == "camera":
            self._camera(req)
            return {"ok": True}
        if op == "info":
            return {"ok": True, **sim.info(), "ble": self.phones.describe()}
        if isinstance(op, str) and op.startswith("phone_"):
            self.phones.handle(req, client.send, self._spawn)
            return None  # answered when the phone is done
        if op == "relays":
            return {"ok": True, "relays": sim.relay_report()}
        if op == "inputs":
            return {"ok": True, **sim.input_report()}
        return {"ok": False, "error": f"unknown op {op!r}"}
