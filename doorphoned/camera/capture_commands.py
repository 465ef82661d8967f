"""The capture commands: ``capture`` (socket and cloud) takes one now, ``log.captures`` lists them.

They live with the captures they drive; the daemon hands them a way to find the captures feature (off
when ``[captures]`` or the camera is disabled). Arguments come from outside and are checked before the
camera is asked for anything: a refused request writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from doorphoned.camera.capture_files import CaptureError
from doorphoned.camera.captures import MAX_LOG_ID, TRIGGERS, CaptureNotFoundError
from doorphoned.core.commands import Caller, Command, CommandError, arg_int
from doorphoned.core.ports import ChunkUploader


class CaptureCommands:
    def __init__(self, captures: Callable[[], Any], cloud: Callable[[], ChunkUploader | None]) -> None:
        self._find = captures
        self._cloud = cloud

    def commands(self) -> list[Command]:
        return [Command("capture", "capture", self.capture, frozenset({"door"}), "take a camera capture now"),
                Command("log.captures", None, self.log_captures, frozenset({"limit", "trigger"}),
                        "the captures kept"),
                Command(None, "capture.get", self.capture_get, frozenset({"capture_id", "chunk_size"}),
                        "a capture's JPEG in acknowledged chunks")]

    def _captures(self) -> Any:
        captures = self._find()
        if captures is None:
            raise CommandError("captures are off (set captures.enabled = true and camera.enabled = true)")
        return captures

    async def capture(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16) if args.get("door") is not None else None
        captures = self._captures()
        try:
            taken = await captures.take("manual", door)
        except CaptureError as exc:
            raise CommandError(str(exc)) from None
        return {"id": taken.id, "ts": taken.ts.isoformat(), "size": taken.size, "door": taken.door,
                "width": taken.width, "height": taken.height}

    async def log_captures(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        limit = arg_int(args, "limit", 1, 100_000, 50)
        trigger = args.get("trigger")
        if trigger is not None and trigger not in TRIGGERS:
            raise CommandError(f"trigger must be one of {', '.join(TRIGGERS)}")
        return [c.as_dict() for c in self._captures().store.recent(limit, trigger)]

    async def capture_get(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """The JPEG of capture ``capture_id``, in acknowledged chunks like ``log.upload``; the reply names the
        capture and carries the SHA-256 of the whole file."""
        capture_id = arg_int(args, "capture_id", 1, MAX_LOG_ID)
        chunk_size = arg_int(args, "chunk_size", 1024, 65536, 32768)
        store = self._captures().store
        try:
            capture = store.get(capture_id)
            data = await asyncio.to_thread(store.read_file, capture)
        except CaptureNotFoundError as exc:
            raise CommandError(str(exc)) from None
        cloud = self._cloud()
        if cloud is None:
            raise CommandError("the cloud link is off")
        return await cloud.upload(data, chunk_size, capture_id=capture.id, ts=capture.ts.isoformat(),
                                  trigger=capture.trigger, door=capture.door, log_id=capture.log_id, bytes=len(data),
                                  content_type="image/jpeg")
