"""``hwsim``: run the simulator, or act on the running one (press buttons, open doors, read relays)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwsim import __version__, default_socket
from hwsim.board import BoardError, load_board

if TYPE_CHECKING:
    from hwsim.server import Server

MAX_REQUEST = 60 * 1024  # below the server's line limit (server.MAX_LINE), so hw-sim always answers
MAX_QR_TEXT = 2000
MAX_KEYS = 4096
FACE_TIMEOUT = 60.0  # a face scene's first photo loads face_recognition and finds the face: seconds when loaded


class HwsimClientError(RuntimeError):
    pass


def request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request, one reply, over the hw-sim socket.

    Every way this can go wrong (hw-sim gone, a request it refused by closing the connection, a
    reply cut short) is a :class:`HwsimClientError` with a sentence, never a traceback.
    """
    data = (json.dumps(message) + "\n").encode()
    if len(data) > MAX_REQUEST:
        raise HwsimClientError(f"request too long ({len(data)} bytes; hw-sim takes at most {MAX_REQUEST})")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout + float(message.get("timeout", 0)))
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise HwsimClientError(f"hw-sim is not running at {path} ({exc.strerror}); start it with `hwsim run`") \
                from exc
        try:
            sock.sendall(data)
            line = sock.makefile("rb").readline()
        except OSError as exc:
            raise HwsimClientError(f"hw-sim closed the connection ({exc.strerror or type(exc).__name__})") from exc
    try:
        reply = json.loads(line) if line else {}
    except ValueError as exc:
        raise HwsimClientError("hw-sim sent an unreadable reply") from exc
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise HwsimClientError(str(error or "no reply from hw-sim"))
    return reply


def _run(args: argparse.Namespace) -> int:
    # The simulator's modules (asyncio, OpenCV, numpy, D-Bus, cryptography) are imported here and not at the top:
    # every other subcommand is a one-line request, and tests poll with them (0.5 s of CPU per call with them loaded).
    import asyncio
    import logging

    from hwsim.camera import SimCamera
    from hwsim.keypad import SimKeypad
    from hwsim.nfc import SimNfcCard
    from hwsim.server import Server, Simulator

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="hwsim %(levelname)s %(message)s", stream=sys.stderr)
    board = load_board(args.board)
    keypad = SimKeypad(args.socket.parent / "keypad.tty")
    sim = Simulator(board, keypad, SimNfcCard(args.nfc_port), SimCamera(args.camera_port, stamp=args.camera_stamp))
    return asyncio.run(_serve(Server(sim, args.socket)))


async def _serve(server: Server) -> int:
    import asyncio
    import signal

    try:
        await server.start()
    except OSError as exc:
        print(f"hwsim: cannot start: {exc} (another hw-sim running? --camera-port/--nfc-port pick others)",
              file=sys.stderr)
        return 1
    print(f"hw-sim ready on {server.path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def _fmt_time(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch).strftime("%H:%M:%S.%f")[:-3]


def _relays(args: argparse.Namespace) -> int:
    relays = request(args.socket, {"op": "relays"})["relays"]
    lines = []
    for r in relays:
        lines.append(f"relay {r['relay']} (GPIO{r['pin']}, active {r['active_level']}): {r['state']}"
                     f"{'' if r['driven'] else ' (not driven)'}, {r['energise_count']} pulses")
        for p in r["pulses"][-5:]:
            duration = "open" if p["duration_ms"] is None else f"{p['duration_ms']:.0f} ms"
            lines.append(f"    {_fmt_time(p['start'])} -> {_fmt_time(p['end'])}  {duration}")
    _print(relays, args.json, "\n".join(lines))
    return 0


def _inputs(args: argparse.Namespace) -> int:
    report = request(args.socket, {"op": "inputs"})
    report.pop("ok", None)
    lines = [f"door {d['door']}: {'open' if d['open'] else 'closed'}"
             f"{', exit pressed' if d['exit_pressed'] else ''}" for d in report["doors"]]
    lines += [f"call button {b['button']}: {'pressed' if b['pressed'] else 'released'}"
              for b in report.get("call_buttons", [])]
    lines.append(f"tamper: {'ON' if report['tamper'] else 'off'}")
    if report.get("presence") is not None:
        lines.append(f"presence: {'someone there' if report['presence'] else 'nobody'}")
    _print(report, args.json, "\n".join(lines))
    return 0


def _keypad(args: argparse.Namespace) -> int:
    if args.keys in ("unplug", "plug"):
        request(args.socket, {"op": "keypad_plug", "plugged": args.keys == "plug"})
    elif len(args.keys) > MAX_KEYS:
        raise HwsimClientError(f"at most {MAX_KEYS} keys at once (got {len(args.keys)})")
    else:
        request(args.socket, {"op": "keypad", "keys": args.keys})
    return 0


def _face_args(args: argparse.Namespace) -> dict[str, Any]:
    kind = _need(args, "live or photo, then a photo")
    if kind not in ("live", "photo"):
        raise HwsimClientError(f"camera face needs live or photo (got {kind!r})")
    if args.photo is None:
        raise HwsimClientError(f"camera face {kind} needs a photo")
    return {"kind": kind, "path": str(Path(args.photo).absolute()), "face_width": args.face_width,
            "screen": args.screen}


_CAMERA_ARGS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {  # action -> its request fields
    "move": lambda a: {"speed": a.speed, "size": a.size},
    "sequence": lambda a: {"path": str(Path(_need(a, "a folder")).absolute())},
    "fps": lambda a: {"fps": _int(_need(a, "a rate"))},
    "ramp": lambda a: {"delta": _float(_need(a, "a number of grey levels")), "seconds": a.seconds},
    "noise": lambda a: {"sigma": _float(_need(a, "a sigma in grey levels"))},
    "stamp": lambda a: {"on": _need(a, "on or off") == "on"},
    "face": _face_args,
}


def _need(args: argparse.Namespace, what: str) -> str:
    if args.what is None:
        raise HwsimClientError(f"camera {args.action} needs {what}")
    if args.action == "stamp" and args.what not in ("on", "off"):
        raise HwsimClientError("camera stamp needs on or off")
    return str(args.what)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise HwsimClientError(f"not a number: {text!r}") from None


def _int(text: str) -> int:
    if not text.isdigit():
        raise HwsimClientError(f"not a whole number: {text!r}")
    return int(text)


def _camera(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {"op": "camera", "action": args.action}
    if args.action in _CAMERA_ARGS:
        message.update(_CAMERA_ARGS[args.action](args))
    if args.action in ("qr", "show"):
        if args.what is None:
            raise HwsimClientError(f"camera {args.action} needs {'a text' if args.action == 'qr' else 'a file'}")
        if args.action == "qr" and len(args.what) > MAX_QR_TEXT:
            raise HwsimClientError(f"at most {MAX_QR_TEXT} characters fit a QR code shown here (got {len(args.what)})")
        message["text" if args.action == "qr" else "path"] = (
            args.what if args.action == "qr" else str(Path(args.what).absolute()))
    request(args.socket, message, FACE_TIMEOUT if args.action == "face" else 5.0)
    return 0


def _info(args: argparse.Namespace) -> int:
    info = request(args.socket, {"op": "info"})
    info.pop("ok", None)
    text = "\n".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in facts.items()) for name, facts in info.items())
    _print(info, args.json, text)
    return 0


def _watch(args: argparse.Namespace) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(args.socket))
        sock.sendall(b'{"op": "watch"}\n')
        for line in sock.makefile("r"):
            print(line.strip(), flush=True)
    return 0


def _simple(message: dict[str, Any]) -> Any:
    def run(args: argparse.Namespace) -> int:
        request(args.socket, {k: (v(args) if callable(v) else v) for k, v in message.items()})
        return 0
    return run


def _phone_add(args: argparse.Namespace) -> int:
    """Made here, not by the running hw-sim: the key pair is a file beside its socket (a phone's own storage)."""
    from hwsim.phone import PhoneBook, PhoneError  # cryptography: loaded only by the command that needs it

    try:
        phone = PhoneBook(args.socket.parent / "phones").add(args.name, args.id)
    except PhoneError as exc:
        raise HwsimClientError(str(exc)) from exc
    print(phone.public_pem, end="")
    return 0


def _read_unit_key(args: argparse.Namespace) -> str | None:
    if not args.unit_key:
        return None
    try:
        return Path(args.unit_key).read_text(encoding="utf-8")[:4096]
    except OSError as exc:
        raise HwsimClientError(f"cannot read {args.unit_key}: {exc.strerror}") from exc


def _phone(args: argparse.Namespace) -> int:
    if args.action == "add":
        return _phone_add(args)
    if args.action == "nfc":
        message: dict[str, Any] = {"op": "phone_nfc", "name": args.name, "timeout": args.timeout,
                                   "unit_key": _read_unit_key(args)}
    elif args.action == "ble":
        message = {"op": "phone_ble", "name": args.name, "mode": args.mode, "rssi": args.rssi, "door": args.door,
                   "walk_in": args.walk_in, "shaken": not args.still, "seconds": args.seconds,
                   "unit_key": _read_unit_key(args)}
        if message["unit_key"] is None:
            raise HwsimClientError("phone ble needs --unit-key FILE (the unit's public key: `doorphonectl status`)")
    else:
        message = {"op": "phone_replay", "kind": args.kind, "timeout": args.timeout}
    reply = request(args.socket, {k: v for k, v in message.items() if v is not None},
                    timeout=max(args.timeout, args.seconds) + 5)
    counter = f" (counter {reply['counter']})" if reply.get("counter") else ""
    _print(reply, args.json, f"phone {args.action}: ok{counter}")
    return 0


def _phone_parser(sub: Any) -> None:
    phone = sub.add_parser("phone", help="play a phone with the door app: make its key, tap NFC, advertise over BLE, "
                           "replay the last answer or advert")
    phone.add_argument("action", choices=["add", "nfc", "ble", "replay"])
    phone.add_argument("name", nargs="?", default="", help="the phone (add/nfc/ble); replay: ignored")
    phone.add_argument("--id", default=None, help="add: the key id the phone answers with (default: its name)")
    phone.add_argument("--unit-key", default=None, metavar="FILE",
                       help="the unit's public key (PEM): ble needs it; nfc checks the unit's signature with it")
    phone.add_argument("--mode", choices=["shake", "hands-free", "tap"], default="hands-free")
    phone.add_argument("--rssi", type=int, default=-55, help="ble: signal strength at the unit, dBm (default -55)")
    phone.add_argument("--walk-in", action="store_true", help="ble: start far (-95 dBm) and walk up to --rssi")
    phone.add_argument("--still", action="store_true", help="ble shake: the phone was not shaken")
    phone.add_argument("--door", type=int, default=1, help="ble: the door the token asks for (default 1)")
    phone.add_argument("--seconds", type=float, default=3.0, help="ble: how long it advertises (default 3)")
    phone.add_argument("--kind", choices=["nfc", "ble"], default="nfc", help="replay: which (default nfc)")
    phone.add_argument("--timeout", type=float, default=5.0, help="nfc: seconds to wait for the reader")
    phone.add_argument("--json", action="store_true")
    phone.set_defaults(func=_phone)


def _camera_parser(sub: Any) -> None:
    """``hwsim camera``: what the camera shows (its scenes grew with the video and face features)."""
    camera = sub.add_parser("camera", help="what the camera sees (a QR code, an image, grey, a moving object, an "
                            "image sequence, a live or photo face), its rate and modes (ramp, noise, stamp); or "
                            "switch it off/on")
    camera.add_argument("action", choices=["qr", "show", "clear", "move", "sequence", "face", "fps", "ramp", "noise",
                                           "stamp", "off", "on"])
    camera.add_argument("what", nargs="?", help="qr: the text; show: an image file; sequence: a folder of images; "
                        "fps: frames per second (1-60); ramp: grey levels to add (-255..255, 0 = no ramp); "
                        "noise: sigma in grey levels (0 = none); stamp: on|off; face: live|photo")
    camera.add_argument("photo", nargs="?", help="face: the photo to make the face from")
    camera.add_argument("--speed", type=float, default=200.0, help="move: pixels per second (default 200)")
    camera.add_argument("--size", type=int, default=120, help="move: the object's diameter in pixels (default 120)")
    camera.add_argument("--seconds", type=float, default=10.0, help="ramp: seconds to reach the level (default 10)")
    camera.add_argument("--face-width", type=int, default=200, help="face: the face's width in the frame, px "
                        "(40-400, default 200)")
    camera.add_argument("--screen", action="store_true", help="face: shown on a phone screen held up to "
                        "the camera (photo: a still picture; live: a video of the live face, replayed; pixel grid, "
                        "moire, bezel, glare)")
    camera.set_defaults(func=_camera)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsim", description="Door-phone hardware simulator.")
    parser.add_argument("--version", action="version", version=f"hwsim {__version__}")
    parser.add_argument("--socket", type=Path, default=None, help="hw-sim socket (default $HWSIM_SOCKET or "
                        "./var/hwsim.sock)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the simulator")
    run.add_argument("--board", type=Path, help="board description (TOML); default: the built-in board")
    run.add_argument("-v", "--verbose", action="store_true", help="log every relay change")
    run.add_argument("--nfc-port", type=int, default=54321, help="UDP port of the simulated NFC link (0 = any free)")
    run.add_argument("--camera-port", type=int, default=8090, help="HTTP port of the camera stream (0 = any free)")
    run.add_argument("--camera-stamp", action="store_true", help="stamp every camera frame with its instant "
                     "(hwsim.stamp; also `hwsim camera stamp on`)")
    run.set_defaults(func=_run)

    door = sub.add_parser("door", help="open or close a door (its status contact)")
    door.add_argument("action", choices=["open", "close"])
    door.add_argument("door", type=int)
    door.set_defaults(func=_simple({"op": "door", "door": lambda a: a.door, "open": lambda a: a.action == "open"}))

    button = sub.add_parser("button", help="press a button: a door's exit button or a call button")
    button.add_argument("kind", choices=["exit", "call"])
    button.add_argument("door", type=int, metavar="N", help="door number (exit) or call button number (call)")
    button.add_argument("--hold-ms", type=int, default=200, help="how long it stays pressed (default 200)")
    button.set_defaults(func=_simple({"op": "press", "kind": lambda a: a.kind, "door": lambda a: a.door,
                                      "hold": lambda a: a.hold_ms / 1000}))

    tamper = sub.add_parser("tamper", help="open (on) or close (off) the housing")
    tamper.add_argument("state", choices=["on", "off"])
    tamper.set_defaults(func=_simple({"op": "tamper", "on": lambda a: a.state == "on"}))
    presence = sub.add_parser("presence", help="someone steps in front of the unit (on) or leaves (off): the "
                              "presence sensor or touch key")
    presence.add_argument("state", choices=["on", "off"])
    presence.set_defaults(func=_simple({"op": "presence", "on": lambda a: a.state == "on"}))

    keypad = sub.add_parser("keypad", help="type on the keypad: digits, # submit, * clear; or unplug/plug it")
    keypad.add_argument("keys", help="e.g. 12345678#  (or the words unplug / plug)")
    keypad.set_defaults(func=_keypad)

    nfc = sub.add_parser("nfc", help="present an NFC card to the reader")
    nfc.add_argument("action", choices=["tap"])
    nfc.add_argument("uid", help="4 or 7 bytes of hex, e.g. 04A1B2C3")
    nfc.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reader (default 5)")
    nfc.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                     help="leave the card on the reader this long (answering every poll); exit 1 if never read")
    nfc.set_defaults(func=_simple({"op": "nfc_tap", "uid": lambda a: a.uid,
                                   "timeout": lambda a: a.hold or a.timeout, "hold": lambda a: a.hold}))

    _camera_parser(sub)

    _phone_parser(sub)

    info = sub.add_parser("info", help="where each simulated device is (keypad pty, ...)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)

    for name, func, text in (("relays", _relays, "relay states and recent pulses"),
                             ("inputs", _inputs, "input levels: door contacts, buttons, tamper, presence")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(func=func)

    watch = sub.add_parser("watch", help="print relay and input changes as JSON lines until interrupted")
    watch.set_defaults(func=_watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.socket is None:
        args.socket = default_socket()
    try:
        return int(args.func(args))
    except (HwsimClientError, BoardError) as exc:
        print(f"hwsim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
