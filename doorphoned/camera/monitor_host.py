"""A runnable host of the monitor stream over a synthetic scene, driven by JSON lines on stdin/stdout.

``python -m doorphoned.camera.monitor --synthetic --port 0`` prints one ``{"ready": true, "port": N, ...}``
line once the server listens, then answers one JSON line per request line:

- ``{"op": "issue_session", "purpose": "cloud", "cap_seconds": 180}`` -> ``{"ok": true, "grant": {...}}``
- ``{"op": "revoke", "id": "..."}`` -> ``{"ok": true}`` (``ok: false`` when no live grant has that id)
- ``{"op": "viewers"}`` / ``{"op": "status"}`` -> ``{"ok": true, "viewers": [...]}`` / the whole status

Every line is answered, bad ones with ``{"ok": false, "error": "..."}``; end of stdin stops the host. The
camera process will carry the same ops on its own protocol; this host is for tests and the bench.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from doorphoned.camera.hub import FrameHub
from doorphoned.camera.monitor import MonitorError, MonitorServer, MonitorSettings
from doorphoned.camera.monitor_auth import AccessError
from doorphoned.core.frames import Frame
from doorphoned.core.strictjson import loads as strict_loads

log = logging.getLogger(__name__)
MAX_LINE = 4096


class SyntheticCamera:
    """A moving pattern at ``fps``, each frame stamped with its capture instant (``hwsim.stamp``)."""

    def __init__(self, hub: FrameHub, width: int, height: int, fps: int) -> None:
        self.hub, self.width, self.height, self.fps = hub, width, height, fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="synthetic-camera", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from hwsim import stamp
        base = np.fromfunction(lambda y, x, c: (x + y * 2 + c * 60) % 256, (self.height, self.width, 3),
                               dtype=np.int32).astype(np.uint8)
        seq, start = 0, time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            image = np.roll(base, seq * 4, axis=1)
            stamp.draw(image, stamp.now_ms(now))
            self.hub.publish(Frame(seq, now, image))
            seq += 1
            self._stop.wait(max(0.0, start + seq / self.fps - time.monotonic()))


def _op_issue(server: MonitorServer, request: dict[str, Any]) -> dict[str, Any]:
    grant = server.issue_session(request.get("purpose"), request.get("cap_seconds"))  # type: ignore[arg-type]
    return {"grant": grant.public()}


def _op_revoke(server: MonitorServer, request: dict[str, Any]) -> dict[str, Any]:
    grant_id = request.get("id")
    if not isinstance(grant_id, str):
        raise AccessError("id must be a string")
    if not server.revoke(grant_id):
        raise AccessError("no live grant with that id")
    return {}


OPS: dict[str, Callable[[MonitorServer, dict[str, Any]], dict[str, Any]]] = {
    "issue_session": _op_issue,
    "revoke": _op_revoke,
    "viewers": lambda server, _req: {"viewers": server.viewers(), "encoder": server.encoder_stats()},
    "status": lambda server, _req: server.status(),
}
# Only with --test-hooks: provoke failures that the server must get out of by itself.
TEST_OPS: dict[str, Callable[[MonitorServer, dict[str, Any]], dict[str, Any]]] = {
    "block_encoder": lambda server, _req: {"blocked": server.block_encoder()},
    "stamp_ahead": lambda server, _req: {"media": server.stamp_ahead(3600)},
}


def answer_bytes(server: MonitorServer, raw: bytes, ops: dict[str, Callable[..., dict[str, Any]]] | None = None
                 ) -> dict[str, Any]:
    """A request line as it arrives: bytes that may not be UTF-8 at all."""
    try:
        return answer(server, raw.decode("utf-8"), ops)
    except UnicodeDecodeError as exc:
        return {"ok": False, "error": f"request is not UTF-8 (byte {exc.start})"}


def answer(server: MonitorServer, line: str, ops: dict[str, Callable[..., dict[str, Any]]] | None = None
           ) -> dict[str, Any]:
    """One request line -> one reply; every failure is a reply, never an exception out of here."""
    ops = OPS if ops is None else ops
    if len(line) > MAX_LINE:
        return {"ok": False, "error": f"request longer than {MAX_LINE} characters"}
    try:
        request = strict_loads(line)
    except ValueError as exc:
        return {"ok": False, "error": f"not JSON: {exc}"[:200]}
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return {"ok": False, "error": "a request is an object with a string 'op'"}
    handler = ops.get(request["op"])
    if handler is None:
        return {"ok": False, "error": f"unknown op (known: {', '.join(ops)})"}
    try:
        return {"ok": True, **handler(server, request)}
    except (AccessError, MonitorError) as exc:
        return {"ok": False, "error": str(exc)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m doorphoned.camera.monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", action="store_true", required=True, help="serve a synthetic scene")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554, help="0 picks a free port (printed when ready)")
    parser.add_argument("--size", type=size, default=(640, 480), help="WxH")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=1000, help="kbit/s")
    parser.add_argument("--user", default="installer")
    parser.add_argument("--password-file", help="the installer's stream password (first line); none: grants only")
    parser.add_argument("--max-viewers", type=int, default=4)
    parser.add_argument("--installer-cap", type=int, default=0, help="seconds; 0: none")
    parser.add_argument("--grant-ttl", type=int, default=60)
    parser.add_argument("--setup-seconds", type=int, default=15, help="close connections idle this long")
    parser.add_argument("--encoder-nice", type=int, default=10, choices=range(20), metavar="0-19",
                        help="nice value of the stream's streaming threads (0: not lowered)")
    parser.add_argument("--test-hooks", action="store_true",
                        help="also take the ops that provoke failures (block_encoder, stamp_ahead): tests only")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def size(text: str) -> tuple[int, int]:
    """``WxH`` with both even and 64..4096 (what the encoder and the stamp can take)."""
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()) or not all(64 <= int(v) <= 4096 and int(v) % 2 == 0
                                                             for v in (width, height)):
        raise argparse.ArgumentTypeError("size is WxH, even numbers from 64 to 4096")
    return int(width), int(height)


def settings_from(args: argparse.Namespace) -> MonitorSettings:
    width, height = args.size
    password = ""
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as file:
            password = file.readline().strip()
    return MonitorSettings(host=args.host, port=args.port, public_host=args.host, width=width, height=height,
                           fps=args.fps, bitrate_kbps=args.bitrate, user=args.user, password=password,
                           max_viewers=args.max_viewers, installer_cap_seconds=args.installer_cap,
                           grant_ttl_seconds=args.grant_ttl, setup_seconds=args.setup_seconds,
                           encoder_nice=args.encoder_nice)


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from(args)
    hub = FrameHub()
    camera = SyntheticCamera(hub, settings.width, settings.height, settings.fps)
    server = MonitorServer(hub, settings)
    try:
        server.start()
    except MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    camera.start()
    reply({"ready": True, "port": server.port, "url": server.status()["url"]})
    ops = {**OPS, **TEST_OPS} if args.test_hooks else OPS
    try:
        for raw in sys.stdin.buffer:
            reply(answer_bytes(server, raw.rstrip(b"\n"), ops))
    finally:
        camera.stop()
        server.stop()
    return 0
