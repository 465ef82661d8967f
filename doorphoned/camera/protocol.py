"""The JSON-lines protocol between the daemon and the camera process, both ways.

One JSON object per line, UTF-8, at most :data:`MAX_LINE` bytes. The daemon writes **ops** to the
process's stdin (``{"op": NAME, ...}``); the process writes **events** to its stdout (``{"ev": NAME, ...}``).
Each side dispatches by name through a table, so a new consumer (snapshots, the monitor stream) adds an op
and an event without touching the plumbing; a name a side does not know is answered with an ``op_error``
event (process) or logged and ignored (daemon), never fatal.

The conversation::

    process -> {"ev": "hello", "version": 1, "pid": 1234, "ops": ["start", "wake", ...]}
    daemon  -> {"op": "start", "source": "http://...", "capture": "auto", ...}   (settings; the source URL,
               password included, travels here and never on the command line, where ``ps`` shows it)
    process -> {"ev": "connected", "capture": "mjpeg"}
    process -> {"ev": "qr", "texts": ["DPK1:..."]}          (the codes in view, when they change)
    process -> {"ev": "stats", "frames": 150, "published": 12, "active": false, ...}   (every few seconds)
    daemon  -> {"op": "wake", "seconds": 5}                 (analyse full frames for a while: a door opened)
    daemon  -> {"op": "set-active", "consumer": "monitor", "active": true}   (continuous frames while held)
    process -> {"ev": "op_error", "op": "zoom", "message": "unknown op"}
    daemon  -> {"op": "snapshot", "req": 7, ...}             (a request: any op with a ``req`` id)
    process -> {"ev": "reply", "req": 7, "ok": true, ...}    (exactly one reply per request, in any order;
               ``"ok": false, "message": ...`` when refused, instead of ``op_error``)
    process -> {"ev": "error", "message": "camera stream lost (no frame)"}   (then it exits 1)

A daemon that sees a ``hello`` of another ``version`` stops the process with an error (a mixed install).
The process exits when its stdin reaches EOF: the daemon is gone, even by ``kill -9``.
"""

from __future__ import annotations

import json
import math
from typing import Any

VERSION = 1
MAX_LINE = 64 * 1024


class ProtocolError(ValueError):
    """A line that is not one JSON object naming an op/event: logged by the reader, never acted on."""


def encode(message: dict[str, Any]) -> bytes:
    """One line; refuses NaN/Infinity (not JSON) and oversize messages instead of sending them."""
    line = json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def _no_constants(token: str) -> float:
    raise ProtocolError(f"{token} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ProtocolError("duplicate key")
    return result


def decode(line: bytes, kind: str) -> tuple[str, dict[str, Any]]:
    """``(name, message)`` of an op (``kind="op"``) or event (``kind="ev"``) line; :class:`ProtocolError`
    for anything else (too long, not UTF-8, not an object, NaN, duplicate keys, deep nesting, no name)."""
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"unreadable line: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    name = message.get(kind)
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"no {kind!r} name")
    return name, message


def number(message: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    """A finite number field within [low, high], else :class:`ProtocolError` naming the key."""
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key} must be a number")
    if isinstance(value, float) and not math.isfinite(value):  # (an int is compared exactly: 10**400 is no error)
        raise ProtocolError(f"{key} must be a finite number")
    if not low <= value <= high:
        raise ProtocolError(f"{key} must be within {low}..{high}")
    return float(value)


def text(message: dict[str, Any], key: str, default: str | None = None, limit: int = 4096) -> str:
    """A string field without NUL, at most ``limit`` characters, else :class:`ProtocolError`."""
    value = message.get(key, default)
    if not isinstance(value, str) or "\0" in value or len(value) > limit:
        raise ProtocolError(f"{key} must be a string of at most {limit} characters")
    return value


MAX_REQUEST_ID = 2**53
DEFERRED = object()
"""An op handler's result meaning: the reply comes later, from the op's own thread (``camera/capture_ops.py``).
Here, not in ``camera/process.py``: that module runs as ``__main__``, and an import of it would make a
second, different sentinel."""


def request_id(message: dict[str, Any]) -> int | None:
    """The ``req`` of a request op (a whole number 1..2**53), ``None`` for a plain op."""
    req = message.get("req")
    if req is None:
        return None
    if isinstance(req, bool) or not isinstance(req, int) or not 1 <= req <= MAX_REQUEST_ID:
        raise ProtocolError("req must be a whole number from 1 to 2**53")
    return req
