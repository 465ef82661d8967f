"""Property fuzz of ``doorphonectl``'s own parsing: hostile argv and stdin against one long-lived daemon.

The control socket behind it has its own fuzz (test_fuzz_control.py); this one checks what the CLI does
before and after the socket: every verb with hostile arguments, options, ``KEY=VALUE`` settings, socket
paths and PINs on stdin. The CLI runs in this process (``main(argv)``, exactly the console script's code)
so that 10,000 cases take minutes, not hours of interpreter start-ups; argv is built as bytes the kernel
can pass (anything but NUL) and decoded as Python decodes a real argv, and the output streams encode as a
real terminal's do. Invariant: exit 0, 1 or 2, never a traceback; a failure is one ``doorphonectl`` line on
stderr; a verb that would change something is refused; nothing opens (hw-sim's relay history unchanged),
nothing changes in the store, the daemon lives and logs no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.ctl import build_parser, main
from tests.e2e.test_fuzz_control import snapshot
from tests.fuzz import HOSTILE_CHARS, fuzz_cases, hostile_text

# Verbs whose hostile arguments may succeed and still change nothing (`log level` with no value reads; a value
# is never 1-7 here). Every other verb, given what this
# fuzz gives it (no user or key exists, door numbers are never 1-16, settings keys never allowed), must fail.
READ_ONLY = {"status", "relay list", "log doors", "log calls", "log level", "config show", "cloud status", "user list",
             "tempkey list", "access check", "doctor", "hangup", "config validate", "log captures", "monitor status",
             "phone list", "face list", "face show"}
# Verbs that would act whatever they are given: not fuzzed against the daemon.
ACTING = {"relay test", "user add", "tempkey create", "call", "capture"}


def verb_paths() -> list[str]:
    """Every verb of the parser, found by walking it (a new feature module's verbs are fuzzed too)."""
    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[str]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [" ".join(path)]
        return [p for name, sub in subs[0].choices.items() for p in walk(sub, (*path, name))]
    return walk(build_parser(), ())


def as_argv(raw: bytes) -> str:
    """What a program receives for these argv bytes: no NUL (the kernel ends a string there), and
    Python's decoding (invalid UTF-8 becomes lone surrogates)."""
    return os.fsdecode(raw.replace(b"\0", b""))


def from_text(text: str) -> str:
    return as_argv(text.encode("utf-8", "surrogatepass"))


def deep(n: int, pair: tuple[str, str]) -> str:
    return pair[0] * n + "1" + pair[1] * n


argv_tokens = st.one_of(
    hostile_text.map(from_text),
    st.binary(max_size=40).map(as_argv),
    st.sampled_from(HOSTILE_CHARS).map(from_text),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "0", "17", "-1", "99999999999999999999", "1,2",
                     "all", "--json", "--limit", "--door", "--kind", "--png", "--at", "-", "--", "=", "x=1"]),
    st.builds(deep, st.integers(10, 20_000), st.sampled_from([("[", "]"), ('{"a":', "}")])),
)
# A settings key no allow-list holds; its value is anything, JSON tokens and deep nesting included.
settings_pairs = st.builds(lambda k, v: f"zz{k}={v}", argv_tokens.filter(lambda t: "=" not in t), argv_tokens)
settings_pairs |= st.builds(lambda k, v: f"zz{k}={{{v}, {v}}}", st.text(max_size=3),
                            st.sampled_from(['"a": 1', '"a": NaN']))  # duplicate keys


def not_a_door(token: str) -> bool:
    """Neither a door of this unit nor a log level: argparse's int() must not read 1-16 out of it."""
    try:
        return not 1 <= int(token) <= 16
    except ValueError:
        return True


OUT = "{out}"  # the test's output folder, put in at run time
# `face photo USER ID --out FILE`: ids that try to leave the photo folder, NUL (on the socket, see
# test_fuzz_control.py; argv cannot carry it), huge ids, hostile text; FILE in the test's folder or beside it.
photo_ids = st.one_of(argv_tokens, st.sampled_from(["../device.key", "../" * 12 + "etc/passwd", "0" * 32, "f" * 32,
                                                    "0" * 31 + "/", "a" * 32 + "/../../x", "..", ".", "/", "*"]),
                      st.integers(65, 100_000).map(lambda n: "f" * n))
photo_outs = st.sampled_from([f"{OUT}/photo.jpg", f"{OUT}/../escaped.jpg", f"{OUT}/sub/x.jpg", f"{OUT}/"])
face_photo_args = st.builds(lambda user, photo_id, out, force: [user, photo_id, "--out", out, *(["--force"] * force)],
                            photo_ids, photo_ids, photo_outs, st.booleans())


def case_for(path: str) -> st.SearchStrategy[list[str]]:
    """argv after the verb: hostile tokens, shaped where a verb would otherwise act."""
    tokens = st.lists(argv_tokens.filter(not_a_door), max_size=4)
    if path == "face photo":
        return face_photo_args | tokens
    if path in ("config set", "config unset"):
        return st.lists(settings_pairs if path == "config set" else settings_pairs.map(lambda s: s.split("=")[0]),
                        min_size=1, max_size=3)
    return tokens


socket_paths = st.one_of(st.just(None), st.sampled_from(["/nonexistent/s", "/", "/dev/null"]),
                         st.integers(90, 5000).map(lambda n: "/tmp/" + "s" * n), argv_tokens)
cases = st.sampled_from(sorted(set(verb_paths()) - ACTING)).flatmap(
    lambda path: st.tuples(st.just(path), case_for(path), socket_paths, hostile_text))


def run(argv: list[str], stdin: str) -> tuple[int, str, str]:
    """``main(argv)`` with streams that encode as a real terminal's (stdout strict, stderr backslashreplace)."""
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, "utf-8", "strict", write_through=True)
    stderr = io.TextIOWrapper(err, "utf-8", "backslashreplace", write_through=True)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


def written(root: Path, state_dir: Path) -> set[Path]:
    """Every file and folder under ``root`` outside the daemon's state dir (its log only grows)."""
    return {Path(top) / name for top, dirs, names in os.walk(root) for name in [*dirs, *names]
            if not (Path(top) / name).is_relative_to(state_dir)}


def test_doorphonectl_fuzz_one_daemon(daemon, hwsim, tmp_path):
    d = daemon
    before = snapshot(d, hwsim)
    assert before["users"] == [] and before["keys"] == [], "the fuzz relies on no user and no key existing"
    counts = {"ok": 0, "refused": 0, "usage": 0}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    files_before, cwd_before = written(tmp_path, d.state_dir), set(os.listdir("."))

    @settings(max_examples=fuzz_cases(200), deadline=None, suppress_health_check=list(HealthCheck))
    @given(cases)
    def fuzz(case: tuple[str, list[str], str | None, str]) -> None:
        path, rest, sock, stdin = case
        rest = [t.replace(OUT, str(out_dir), 1) if t.startswith(OUT) else t for t in rest]
        argv = [*(["--socket", sock] if sock is not None else ["--socket", str(d.socket)]), *path.split(), *rest]
        code, out, err = run(argv, stdin)
        assert code in (0, 1, 2), (argv[:6], code, err[-300:])
        assert "Traceback" not in err, (argv[:6], err[-1500:])
        if code == 2 and path == "doctor" and not err:  # it ran, and a check failed: its own exit status
            counts["ok"] += 1
        elif code:
            assert err.startswith("doorphonectl") and err.count("\n") == 1, (argv[:6], err[-300:])
            counts["usage" if code == 2 else "refused"] += 1
        else:
            assert path in READ_ONLY or out.startswith("usage:"), (argv[:6], out[-300:])
            counts["ok"] += 1

    fuzz()
    assert counts["refused"] > 0 and counts["usage"] > 0, counts
    assert snapshot(d, hwsim) == before
    assert written(tmp_path, d.state_dir) == files_before and set(os.listdir(".")) == cwd_before  # no file written
    assert d.ctl_json("status")["pid"] == d.proc.pid
    assert "Traceback" not in d.log_text()


def test_settings_that_are_not_json_are_sent_as_text(daemon):
    """A value too deep for JSON is text like any other non-JSON value (not a crash); the daemon judges it."""
    result = daemon.ctl("config", "set", "zz.deep=" + deep(5000, ("[", "]")), check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr[-500:]
    assert "zz.deep" in result.stderr and "Traceback" not in result.stderr  # the daemon's answer, naming the key
    assert daemon.ctl_json("config", "show")["settings"] == {}


def test_a_socket_path_too_long_is_one_line(tmp_path: Path):
    result = run(["--socket", str(tmp_path / ("s" * 200)), "status"], "")
    assert result[0] == 1 and result[2].startswith("doorphonectl: ") and result[2].count("\n") == 1, result
