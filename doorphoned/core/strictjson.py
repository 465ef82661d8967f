"""Strict JSON for everything that arrives over MQTT: one parser, one set of rules.

Python's ``json`` is lenient where a door must not be: it accepts ``NaN`` and ``Infinity`` (a command
with ``"ts": NaN`` passed every age check and never expired), lets the last of two equal keys win (the
cloud and the unit could read one message two ways), and recurses once per nesting level (5,000 ``[``
under the size limit ended in a RecursionError and no reply). Here:

* the nesting depth is measured *before* parsing, by a linear scan with no recursion;
* non-finite numbers (the ``NaN``/``Infinity``/``-Infinity`` tokens and overflowing ones such as
  ``1e999``), duplicate keys at any depth, invalid UTF-8, NUL and other control characters, lone
  surrogates and bidi controls in any string or key are refused, with the path of the field;
* each command declares its fields (``core/commands.Command``); anything else is refused, naming the field.

A document that parsed but broke a rule travels with the error (``StrictJsonError.document``), so the
caller can still answer the command's id.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

MAX_DEPTH = 32
MAX_INT_DIGITS = 30
# A whole string (unrolled loop: ~15x faster than (?:[^"\\]|\\.)*) or one bracket: strings are skipped whole.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# C0 controls, DEL, C1 controls, bidi embedding/override/isolate marks, and surrogates (only lone ones
# survive json's decoding: a valid pair becomes one character).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What can carry a forbidden character into a parsed string: a \\u escape of one (or of any surrogate,
# or any U+00XX), or such a character sent raw. Only a payload that matches is walked string by string.
_SUSPECT = re.compile(r"\\u(?:00[0-9a-fA-F]{2}|061[cC]|200[eEfF]|202[a-eA-E]|206[6-9]|[dD][89a-fA-F][0-9a-fA-F]{2})"
                      "|[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMES = {"\x00": "a NUL character", "\u202e": "a bidi control (U+202E)"}


class StrictJsonError(ValueError):
    """A payload refused by the strict rules; ``document`` is the parsed value when parsing got that far."""

    def __init__(self, message: str, document: Any = None) -> None:
        super().__init__(message)
        self.document = document


class _NonFinite:
    """Stands in for a non-finite number during the parse, so the walk can name its field."""

    def __init__(self, text: str) -> None:
        self.text = text


class _Object(dict[str, Any]):
    """A JSON object that remembers which of its keys appeared more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    value = _Object(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        value.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return value


def _float(text: str) -> Any:
    number = float(text)
    return number if math.isfinite(number) else _NonFinite(text)


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise StrictJsonError(f"a number of {len(text)} digits is too long")
    return int(text)


def depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of arrays and objects, counted without recursion (stops once past ``limit``)."""
    level = deepest = 0
    for match in _TOKEN.finditer(text):  # match by match, so a thread running this yields the GIL often
        piece = match.group()
        if piece[0] == '"':
            continue
        level += 1 if piece in "[{" else -1
        if level > deepest:
            deepest = level
            if deepest > limit:
                break
    return deepest


def loads(payload: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``payload`` by the strict rules; raises :class:`StrictJsonError` with a reason naming the field."""
    if isinstance(payload, bytes):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJsonError(f"payload is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = payload
    if depth(text, max_depth) > max_depth:
        raise StrictJsonError(f"nested deeper than {max_depth} levels")
    flagged: list[bool] = []  # set by the hooks: a duplicate key or a non-finite number was seen

    def flag(value: Any) -> Any:
        flagged.append(True)
        return value

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        value = _object(items)
        return flag(value) if value.duplicates else value

    def number(text: str) -> Any:
        value = _float(text)
        return flag(value) if isinstance(value, _NonFinite) else value

    try:
        document = json.loads(text, object_pairs_hook=pairs, parse_constant=lambda t: flag(_NonFinite(t)),
                              parse_float=number, parse_int=_int)
    except StrictJsonError:
        raise
    except (ValueError, RecursionError):
        raise StrictJsonError("malformed JSON") from None
    if flagged or _SUSPECT.search(text):  # the walk is exact; the test only spares clean payloads the cost
        problem = next(_problems(document), "")
        if problem:
            raise StrictJsonError(problem, document)
    return document


def _problems(document: Any) -> Iterator[str]:
    """Every rule the parsed document breaks, as ``path: reason``; iterative, so depth cannot hurt."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _NonFinite):
            yield f"{_path(path)}: {value.text[:20]} is not a finite number"
        elif isinstance(value, str):
            yield from _text_problem(_path(path), value)
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key in getattr(value, "duplicates", ()):
                yield f"{_path(path)}: duplicate key {_shown(key)}"
            for key in value:
                yield from _text_problem(f"{_path(path)}: key {_shown(key)}", key)
            stack.extend((f"{path}.{key}" if path else key, item) for key, item in reversed(list(value.items())))


def _text_problem(path: str, text: str) -> Iterator[str]:
    match = _FORBIDDEN.search(text)
    if match is not None:
        char = match.group()
        what = _NAMES.get(char) or ("a lone surrogate" if "\ud800" <= char <= "\udfff"
                                    else f"a control character (U+{ord(char):04X})")
        yield f"{path} contains {what}"


def _path(path: str) -> str:
    """Where in the document, as it may appear in a reply or a log line: short, ASCII, escaped."""
    return ascii(path[:80])[1:-1] if path else "the document"


def _shown(text: str, limit: int = 40) -> str:
    """A key from the network, quoted, short, ASCII, escaped."""
    return ascii(text[:limit])


def check_fields(args: dict[str, Any], allowed: frozenset[str], what: str) -> str:
    """The first field of ``args`` that ``what`` does not declare, as an error; '' when there is none."""
    unknown = sorted(set(args) - allowed)
    return f"{what}: unknown field {_shown(unknown[0])}" if unknown else ""


class Throttled:
    """Logs the first of a kind of message, then at most one every ``interval`` seconds with a count.

    Refused commands come from the network: a burst must not flood the log (and push out what matters).
    """

    def __init__(self, emit: Callable[[str], None], interval: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self._monotonic = monotonic
        self._interval = interval
        self._last = -math.inf
        self._held = 0

    def __call__(self, message: str, now: float | None = None) -> None:
        now = self._monotonic() if now is None else now
        if now - self._last < self._interval:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        self._emit(message + (f" ({held} more refused since the last line)" if held else ""))
