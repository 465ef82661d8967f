"""The configuration engine: one TOML file, validated against a typed schema, overridable from the environment.

Why a hand-made schema walk and not a validation library: installers read the errors, so every
error must name the key *and the line* (or the environment variable) it came from, and the same
schema must drive the environment overrides, ``config show`` redaction and the generated
reference in docs/configuration.md. Each setting carries its own documentation and limits as
dataclass field metadata, so adding a key is adding one line of data.

The engine knows no feature. Each feature folder declares its own section(s) in its ``config.py``
(frozen dataclasses of :func:`setting` fields, and the rules within the section as methods); the
root ``Config`` in ``app/config.py`` lists the sections, one field per section, and holds the rules
that span sections (``Config.validate``: a reader's doors must be configured doors, a call button
must not take a door's GPIO). :class:`Schema` turns that root into loading with file:line errors,
``DOORPHONED_*`` environment overrides and the generated key reference.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from doorphoned.core.urls import redact_url

ENV_PREFIX = "DOORPHONED_"
REDACTED = "***"
DEFAULT_CONFIG_PATH = Path("/etc/doorphoned/doorphoned.toml")
# Limits far above any real configuration, so hostile files fail with a reason, not a traceback.
MAX_FILE_BYTES = 1_048_576
MAX_STRING = 65_536
MAX_NESTING = 32
_MAX_ERROR = 300

Level = Literal["high", "low"]


class ConfigError(ValueError):
    """A configuration problem, located by key path and source (line or environment variable)."""

    def __init__(self, key: str, message: str, where: str = "") -> None:
        self.key = one_line(key, 80)
        self.message = one_line(message)
        self.where = where
        located = f"{self.key} ({where})" if where else self.key
        super().__init__(f"{located}: {self.message}")


def one_line(text: str, limit: int = _MAX_ERROR) -> str:
    """Text safe for one log or terminal line: control, bidi and other invisible characters escaped
    (a key or value from a hostile file must not forge a second line or reorder the first), and cut."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                       for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    min: float | None = None,
    max: float | None = None,
    secret: bool = False,
    url: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A schema field: its default, its documentation and its limits (``url``: shown without password)."""
    meta = {"doc": doc, "min": min, "max": max, "secret": secret, "url": url, "check": check}
    if isinstance(default, (list, dict)):
        frozen = tuple(default) if isinstance(default, list) else types.MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


def check_timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
    return None


def check_name(value: str) -> str | None:
    if len(value) > 64 or not value.isprintable():
        return "must be printable text of at most 64 characters"
    return None


def check_url(value: str) -> str | None:
    if not re.match(r"^https?://[^\s/]+", value):
        return f"must be an http:// or https:// URL, got {value!r}"
    return None




def check_reader(name: str, enabled: bool, device: tuple[str, str], doors: tuple[str, tuple[int, ...]],
                 door_ids: frozenset[int], source: Source) -> None:
    """A reader section's rules (keypad, NFC, camera QR): enabled needs its device (``device``: key and
    value) and may name only configured doors (``doors``: key and door ids)."""
    (device_key, device_value), (doors_key, reader_doors) = device, doors
    if enabled and not device_value:
        raise ConfigError(f"{name}.{device_key}", f"{name} is enabled but has no {device_key}",
                          source.where(f"{name}.enabled"))
    unknown = sorted(set(reader_doors) - door_ids)
    if enabled and unknown:
        key = f"{name}.{doors_key}"
        raise ConfigError(key, f"no door {unknown[0]} is configured", source.where(key))


# --------------------------------------------------------------------------- loading


@dataclass
class Source:
    """Where each key path was set: a TOML line or an environment variable."""

    lines: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)

    def where(self, path: str) -> str:
        if path in self.env:
            return f"environment {self.env[path]}"
        if path in self.overrides:
            return f"override {self.overrides[path]}"
        probe = path
        while probe:
            if probe in self.lines:
                return f"line {self.lines[probe]}"
            probe = probe.rpartition(".")[0]
        return ""


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Map each key path (``doors[1].relay.pin``) to the line that sets it.

    tomllib keeps no positions, so this reads the file's headers and ``key =`` lines. It is only
    used to *locate* an error in a file tomllib already accepted, so it can afford to be simple.
    """
    lines: dict[str, int] = {}
    arrays: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _header_path(header.group(2).replace('"', "").replace(" ", ""), header.group(1), arrays)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            name = key.group(1).strip('"')
            lines[f"{table}.{name}" if table else name] = number
    return lines


def _header_path(name: str, brackets: str, arrays: dict[str, int]) -> str:
    parts = name.split(".")
    if brackets == "[[":
        arrays[name] = arrays.get(name, -1) + 1
    # Sub-tables of an array element ([doors.relay] after [[doors]]) belong to its last element.
    out: list[str] = []
    for i in range(len(parts)):
        prefix = ".".join(parts[: i + 1])
        out.append(f"{parts[i]}[{arrays[prefix]}]" if prefix in arrays else parts[i])
    return ".".join(out)


class Root(Protocol):
    """What the engine needs of a root configuration besides being a frozen dataclass of sections."""

    def validate(self, source: Source) -> None:
        """Rules across sections (a reader's doors must be configured doors): raise ConfigError."""

    def warnings(self) -> list[str]:
        """What is valid but almost certainly not meant (see :func:`config_warnings`)."""


R = TypeVar("R", bound=Root)


@dataclass(frozen=True)
class Schema(Generic[R]):
    """A root configuration class (a frozen dataclass whose fields are the features' sections) with the
    loading, environment overrides and documentation the engine derives from it."""

    root: type[R]

    def load(self, path: Path | None = None, *, text: str | None = None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> R:
        """Read, apply run-time ``overrides`` (cloud/CLI ``config set``), then ``env`` (default: os.environ),
        and validate; raise ConfigError when wrong. The environment wins: it is the installer's last word.

        Every way a file can be wrong ends as one ConfigError with a one-line reason: the daemon exits 78
        on it at start (systemd does not loop), and a reload keeps the running configuration.
        """
        if text is None:
            if path is None:
                raise ValueError("load_config needs a path or text")
            text = _read_text(path)
        where = str(path or "config")
        try:
            return self._load_text(text, where, os.environ if env is None else env, overrides or {})
        except ConfigError:
            raise
        except RecursionError:
            raise ConfigError(where, f"values nested too deeply (more than {MAX_NESTING} levels)") from None
        except Exception as exc:  # a schema walk that met a shape nobody foresaw: one line, never a traceback
            raise ConfigError(where, f"cannot be used: {type(exc).__name__}: {exc}") from None

    def load_default(self, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> R:
        """The embedded default configuration (``doorphoned/default.toml``) with ``env`` and ``overrides``."""
        return self.load(text=embedded_default_text(), env=env, overrides=overrides)

    def reference_markdown(self) -> str:
        """The key reference table of docs/configuration.md, generated from the sections."""
        return reference_markdown(self.root)

    def _load_text(self, text: str, where: str, env: Mapping[str, str], overrides: Mapping[str, Any]) -> R:
        if len(text) > MAX_FILE_BYTES:
            raise ConfigError(where, f"larger than {MAX_FILE_BYTES:,} characters: not a configuration file")
        deep = nesting_line(text, MAX_NESTING)
        if deep:
            raise ConfigError(where, f"values nested more than {MAX_NESTING} levels deep", f"line {deep}")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(where, f"TOML syntax error: {exc}") from exc
        source = Source(lines=key_lines(text))
        apply_overrides(raw, overrides, source, self.root)
        apply_env_overrides(raw, env, source, self.root)
        config: R = build(self.root, raw, "", source)
        config.validate(source)
        return config


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_FILE_BYTES:,} bytes: not a configuration file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {exc.start})") from exc


def nesting_line(text: str, limit: int) -> int:
    """The line where arrays/inline tables first nest deeper than ``limit``, or 0.

    tomllib parses nesting by recursion and dies with RecursionError (a traceback, thousands of
    lines) a few hundred levels down; this finds such a file first and names the line. It skips
    strings and comments roughly (no multi-line string awareness): a real file nests 3 deep.
    """
    if text.count("[") + text.count("{") <= limit:
        return 0
    depth, line, quote, comment, escaped = 0, 1, "", False, False
    for char in text:
        if char == "\n":
            line, comment, escaped = line + 1, False, False
            quote = "" if quote in ('"', "'") else quote
        elif comment or escaped:
            escaped = False
        elif quote:
            escaped = quote == '"' and char == "\\"
            quote = "" if char == quote else quote
        elif char in "\"'#":
            quote, comment = ("", True) if char == "#" else (char, False)
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth = max(depth - 1, 0)
    return 0


def config_warnings(config: Root) -> list[str]:
    """What is valid but almost certainly not meant: shown by --check-config, `config validate`,
    `doctor` and the start-up log (the root decides: ``Config.warnings`` in app/config.py)."""
    return config.warnings()


def embedded_default_text() -> str:
    """The embedded default configuration (hw-sim, state in ./var, no cloud)."""
    return resources.files("doorphoned").joinpath("default.toml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- schema walk


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a schema class; cached: resolving them is most of a load's cost."""
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X``, ``X | None``, ``tuple[X, ...]``), if any."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for arg in typing.get_args(tp):
        if arg is not type(None) and arg is not Ellipsis:
            found = _dataclass_of(arg)
            if found:
                return found
    return None


def build(cls: type, data: Any, path: str, source: Source) -> Any:
    """Turn a TOML table into the dataclass ``cls``, checking types, limits and unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(path or "config", "must be a table", source.where(path))
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(path, key), "unknown key", source.where(_join(path, key)))
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key = _join(path, name)
        if name not in data:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                raise ConfigError(key, "required key is missing", source.where(path))
            continue
        values[name] = _convert(hints[name], data[name], key, source)
        _check_limits(fld, values[name], key, source)
    return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: Any, key: str, source: Source) -> Any:
    where = source.where(key)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return _convert(inner, value, key, source)
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, key, source)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(key, f"must be one of {choices}, got {value!r}", where)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {_tname(value)}", where)
        return tuple(_convert(args[0], item, f"{key}[{i}]", source) for i, item in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(key, "must be a table of strings", where)
        return types.MappingProxyType({k: _text(v, f"{key}.{k}", where) for k, v in value.items()})
    return _convert_scalar(tp, value, key, where)


def _convert_scalar(tp: Any, value: Any, key: str, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {_tname(value)}", where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {_tname(value)}", where)
        return _finite(value, key, where)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {_tname(value)}", where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {_tname(value)}", where)
        return _text(value, key, where)
    raise TypeError(f"schema type {tp!r} not supported")  # a bug in the schema, not in the file


def _finite(value: float, key: str, where: str) -> float:
    """NaN passes every ``<``/``>`` limit check and infinity never expires: both are refused here."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(key, f"must be a finite number, got {one_line(str(value), 40)}", where)
    return number


def _text(value: str, key: str, where: str) -> str:
    """NUL cannot reach a path, a header or SQLite intact; megabytes of text are no setting."""
    if "\x00" in value:
        raise ConfigError(key, "must not contain NUL characters", where)
    if len(value) > MAX_STRING:
        raise ConfigError(key, f"is {len(value):,} characters long; at most {MAX_STRING:,}", where)
    return value


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _check_limits(fld: dataclasses.Field[Any], value: Any, key: str, source: Source) -> None:
    low, high, check = fld.metadata.get("min"), fld.metadata.get("max"), fld.metadata.get("check")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and ((low is not None and value < low) or (high is not None and value > high)):
        raise ConfigError(key, f"must be between {_num(low)} and {_num(high)}, got {_num(value)}",
                              source.where(key))
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            raise ConfigError(key, problem, source.where(key))


def _num(value: float | None) -> str:
    if value is None:
        return "any"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------- environment overrides


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str], source: Source, root: type) -> None:
    """Apply every ``DOORPHONED_<SECTION>_<KEY>`` variable to the raw table (in place).

    Doors are addressed by id: ``DOORPHONED_DOORS_2_HOLD_TIME=5``; nested tables continue the
    name: ``DOORPHONED_DOORS_1_RELAY_PIN=22``. An unknown name is an error, not a silent no-op:
    a typo in a unit file must not leave a door misconfigured.
    """
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        tokens = name[len(ENV_PREFIX):].lower().split("_")
        target, key, tp, path = _resolve_env(raw, root, tokens, "", name)
        target[key] = _parse_env_value(tp, env[name], name, path)
        source.env[path] = name


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], source: Source, root: type) -> None:
    """Apply dotted-key overrides (``doors.1.hold_time = 5``, JSON values) to the raw table, in place."""
    for key in sorted(overrides):
        tokens = key.lower().replace(".", "_").split("_")
        target, name, _tp, path = _resolve_env(raw, root, tokens, "", f"override {key}")
        target[name] = overrides[key]
        source.overrides[path] = key


def _resolve_env(table: dict[str, Any], cls: type, tokens: list[str], path: str,
                 var: str) -> tuple[dict[str, Any], str, Any, str]:
    hints = _hints(cls)
    for size in range(len(tokens), 0, -1):
        name = "_".join(tokens[:size])
        if name not in hints:
            continue
        rest, tp, key_path = tokens[size:], hints[name], _join(path, name)
        nested = _dataclass_of(tp)
        if not rest:
            return table, name, tp, key_path
        if nested is None:
            continue
        if typing.get_origin(tp) is tuple:
            return _resolve_env_element(table, name, nested, rest, key_path, var)
        sub = table.setdefault(name, {})
        if not isinstance(sub, dict):
            raise ConfigError(key_path, "must be a table", f"environment {var}")
        return _resolve_env(sub, nested, rest, key_path, var)
    raise ConfigError(var, "unknown configuration key")


def _resolve_env_element(table: dict[str, Any], name: str, cls: type, rest: list[str], path: str,
                         var: str) -> tuple[dict[str, Any], str, Any, str]:
    if not rest[0].isdigit() or len(rest) < 2:
        raise ConfigError(var, f"expected {name.upper()}_<id>_<KEY>")
    items = table.get(name, [])
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("id") == int(rest[0]):
            return _resolve_env(item, cls, rest[1:], f"{path}[{index}]", var)
    raise ConfigError(var, f"no {name} entry with id {rest[0]} in the configuration")


def _takes_text(tp: Any) -> bool:
    """Whether a value of this type is written as bare text in an environment variable."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return any(_takes_text(a) for a in args)
    return tp is str or (origin is Literal and all(isinstance(a, str) for a in args))


def _parse_env_value(tp: Any, text: str, var: str, path: str) -> Any:
    if _takes_text(tp):
        return text
    if nesting_line(text, MAX_NESTING):
        raise ConfigError(path, f"values nested more than {MAX_NESTING} levels deep", f"environment {var}")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"cannot parse {text!r} as a TOML value", f"environment {var}") from exc


# --------------------------------------------------------------------------- showing and documenting


def to_dict(obj: Any, *, redact: bool = True) -> Any:
    """A plain, JSON-ready view of a config object; secret values replaced by ``***``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for fld in dataclasses.fields(obj):
            value = getattr(obj, fld.name)
            if redact and fld.metadata.get("secret") and value:
                out[fld.name] = REDACTED if not isinstance(value, Mapping) else dict.fromkeys(value, REDACTED)
            elif redact and fld.metadata.get("url") and value:
                out[fld.name] = redact_url(value)
            else:
                out[fld.name] = to_dict(value, redact=redact)
        return out
    if isinstance(obj, tuple):
        return [to_dict(v, redact=redact) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v, redact=redact) for k, v in obj.items()}
    return obj


def iter_settings(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Every leaf setting as (dotted key, field, type), for docs and tests."""
    hints = _hints(cls)
    for fld in dataclasses.fields(cls):
        tp = hints[fld.name]
        nested = _dataclass_of(tp)
        key = _join(prefix, fld.name)
        if nested is not None:
            yield from iter_settings(nested, key + ("[]" if typing.get_origin(tp) is tuple else ""))
        else:
            yield key, fld, tp


def env_name(key: str) -> str:
    """The environment variable for a documented key (doors use their id in place of ``[]``)."""
    return ENV_PREFIX + key.replace("[]", "_<ID>").replace(".", "_").upper()


def reference_markdown(root: type) -> str:
    """The key reference table of docs/configuration.md, generated from the schema."""
    rows = ["| key | type | default | meaning | environment variable |", "|---|---|---|---|---|"]
    for key, fld, tp in iter_settings(root):
        default = "required" if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING \
            else _show_default(fld)
        limits = _limits_text(fld)
        rows.append(f"| `{key}` | {_type_text(tp)} | {default} | {fld.metadata['doc']}{limits} | `{env_name(key)}` |")
    return "\n".join(rows) + "\n"


def _show_default(fld: dataclasses.Field[Any]) -> str:
    value = fld.default if fld.default is not dataclasses.MISSING else fld.default_factory()  # type: ignore[operator]
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, tuple):
        value = list(value)
    if value is None:
        return "absent"
    return f"`{tomlish(value)}`"


def tomlish(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {tomlish(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(tomlish(v) for v in value) + "]"
    return str(value)


def _limits_text(fld: dataclasses.Field[Any]) -> str:
    low, high = fld.metadata.get("min"), fld.metadata.get("max")
    if low is None and high is None:
        return ""
    return f" Range {_num(low)}–{_num(high)}."


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return _type_text(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin is tuple:
        return f"list of {_type_text(args[0])}"
    if tp is Mapping or origin is Mapping:
        return "table of strings"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


GENERATED_MARKER = "<!-- generated from the config sections: python -m doorphoned.app.config --update FILE -->"


def write_reference(schema: Schema[Any], argv: list[str]) -> None:
    """``[--update FILE]``: print, or write into FILE after GENERATED_MARKER, the key reference of ``schema``."""
    if len(argv) == 2 and argv[0] == "--update":
        path = Path(argv[1])
        head = path.read_text(encoding="utf-8").split(GENERATED_MARKER)[0]
        path.write_text(f"{head}{GENERATED_MARKER}\n\n{schema.reference_markdown()}", encoding="utf-8")
        return
    print(schema.reference_markdown(), end="")
