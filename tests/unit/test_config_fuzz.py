"""Property fuzz of configuration files: whatever the text, a Config or one ConfigError on one line.

Most cases run the parser in-process (thousands per minute); test_config_fuzz_sample_through_the_binary
sends a sample of the same shapes through the real `doorphoned --check-config` for the exit status.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.app.config import load_config
from doorphoned.core.config import ConfigError, embedded_default_text, to_dict
from tests.fuzz import fuzz_cases, hostile_numbers, hostile_text
from tests.procs import ROOT

DEFAULT = embedded_default_text()
KEYS = sorted({m.group(1) for m in re.finditer(r"^([a-z_]+) = ", DEFAULT, re.MULTILINE)}
              | {"id", "pin", "doors", "hold_time", "trigger_delay", "url", "headers", "targets", "buttons"})

scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text,
                    st.sampled_from([True, 0, 1, -1, 3.0, "high", "low", "relay", "http", "sip:a@b"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4),
                      max_leaves=12).filter(lambda v: v is not None)


def toml_value(value: Any) -> str:
    """A TOML rendering of ``value`` that keeps the hostile parts (nan, inf, huge ints, escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else f"\\u{ord(c):04x}"
                             if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    return '""'


def _insert(text: str, at: int, snippet: str) -> str:
    lines = text.splitlines()
    at %= len(lines) + 1
    return "\n".join([*lines[:at], snippet, *lines[at:]]) + "\n"


def _replace_value(text: str, at: int, value: Any) -> str:
    """The ``at``-th ``key = value`` line of the default gets a hostile value (types at every depth)."""
    lines = text.splitlines()
    assigns = [i for i, line in enumerate(lines) if re.match(r"^[a-z_]+ = ", line)]
    i = assigns[at % len(assigns)]
    lines[i] = lines[i].split(" = ")[0] + " = " + toml_value(value)
    return "\n".join(lines) + "\n"


snippets = st.one_of(
    st.integers(1, 3000).map(lambda n: "x = " + "[" * n),
    st.integers(1, 3000).map(lambda n: "x = " + "{a = " * n),
    st.integers(1, 60).map(lambda n: "x = " + "[" * n + "1" + "]" * n),
    st.sampled_from(["name = \"dup\"", "[site]", "[[doors]]", "[doors.relay]", "id = 1", "hold_time = nan",
                     "doors = 5", "[sip]", "x = 1\nx = 2", "a.b = 1\na = 2", "\x00", "\ufeff", "= 1", "[", "]]",
                     "'''", '"""', "hold_time = 1e999", "pin = 99999999999999999999999999",
                     "headers = {A = 1}", "site = []"]),
    st.builds(lambda k, v: f"{k} = {toml_value(v)}", st.sampled_from(KEYS), values),
    hostile_text,
)

texts = st.one_of(
    st.builds(_insert, st.just(DEFAULT), st.integers(0, 200), snippets),
    st.builds(_replace_value, st.just(DEFAULT), st.integers(0, 200), values),
    st.builds(lambda k, v: f"{k} = {toml_value(v)}\n", st.sampled_from(KEYS), values),
    st.builds(lambda section, k, v: f"[{section}]\n{k} = {toml_value(v)}\n",
              st.sampled_from(["site", "daemon", "control", "gpio", "tamper", "access", "keypad", "nfc", "camera",
                               "cloud", "sip", "doors", "[doors]", "sip.targets", "[sip.buttons]"]),
              st.sampled_from(KEYS), values),
    st.text(max_size=200),
)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def outcome(text: str) -> str:
    """'ok' or the one-line error; anything else (another exception, a second line) fails the test."""
    try:
        config = load_config(text=text, env={})
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.isprintable() and len(message) <= 400, message
        return message
    assert _finite(to_dict(config, redact=False)), text
    return "ok"


@settings(max_examples=fuzz_cases(800), deadline=None, suppress_health_check=list(HealthCheck))
@given(texts)
def test_config_fuzz_in_process(text):
    outcome(text)


def test_config_fuzz_sample_through_the_binary():
    """A sample of the same shapes through `doorphoned --check-config`: 78 and one line, or 0."""
    samples: list[str] = []

    @settings(max_examples=max(fuzz_cases(600) // 200, 3), deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(texts)
    def collect(text):
        samples.append(text)

    collect()
    samples += ["x = " + "[" * 500, "[site]\nname = 'a'\nname = 'b'\n", "[[doors]]\nid = 1\nhold_time = nan\n"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(samples):
            path = Path(tmp) / f"{i}.toml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            result = subprocess.run([str(ROOT / ".venv/bin/doorphoned"), "--check-config", "--config", str(path)],
                                    capture_output=True, text=True, timeout=60, cwd=tmp)
            expected = outcome(text) if "\ud800" not in text and "\udfff" not in text else None
            if result.returncode == 0:
                assert expected in ("ok", None) and "configuration OK" in result.stdout, (text[:200], result)
                continue
            assert result.returncode == 78, (text[:200], result.stderr[-2000:])
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
