"""doorphonectl's parser and registry in-process: the verbs and options are a contract (docs/cli.md, scripts),
and a feature module adds verbs through ``register(cli)`` alone. Talking to a daemon is tested end to end."""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import pytest

from doorphoned.ctl import build_parser, cli, main
from doorphoned.ctl.doors import fmt_log
from doorphoned.ctl.registry import Parser, Registry, arg, one_line
from doorphoned.ctl.system import fmt_status

# Every verb with its options and positionals, as docs/cli.md documents them.
CONTRACT = {
    "status": ["--json"],
    "relay list": ["--json"],
    "relay open": ["--json", "door"],
    "relay test": ["--json", "--pulse-ms"],
    "log doors": ["--json", "--limit", "--door", "--kind"],
    "log calls": ["--json", "--limit", "--type"],
    "log level": ["--json", "level"],
    "log captures": ["--json", "--limit", "--trigger"],
    "config show": ["--json"],
    "config validate": ["--json", "file"],
    "config set": ["--json", "settings"],
    "config unset": ["--json", "keys"],
    "doctor": ["--json"],
    "cloud status": ["--json"],
    "call": ["--json", "target"],
    "hangup": ["--json"],
    "user add": ["--json", "name", "--id", "--department", "--doors", "--schedule", "--disabled"],
    "user list": ["--json", "--limit"],
    "user show": ["--json", "user"],
    "user remove": ["--json", "user"],
    "pin set": ["user"],  # no --json: it prints one confirmation, and the PIN never goes on the command line
    "card add": ["--json", "user", "uid"],
    "card remove": ["--json", "user", "uid"],
    "tempkey create": ["--json", "--name", "--doors", "--repeat", "--start", "--end", "--from", "--to", "--days",
                       "--count", "--recipient"],
    "tempkey list": ["--json"],
    "tempkey show": ["--json", "id"],
    "tempkey remove": ["--json", "id"],
    "tempkey qr": ["--json", "id", "--png"],
    "access check": ["--json", "--door", "--pin", "--qr", "--card", "--face", "--at"],
    "monitor status": ["--json"],
    "capture": ["--json", "--door"],
    "phone add": ["--json", "user", "--public-key", "--id", "--modes", "--expires"],
    "phone list": ["--json", "--user"],
    "phone remove": ["--json", "id"],
    "face enrol": ["--json", "user", "--photo"],
    "face list": ["--json", "--limit", "--offset"],
    "face show": ["--json", "user"],
    "face photo": ["user", "photo", "--out", "--force"],
    "face remove": ["--json", "user", "--template"],
}


def verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``{"relay open": ["--json", "door"], ...}`` read from the built parser, in its order."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {" ".join(path): [a.option_strings[-1] if a.option_strings else a.dest for a in parser._actions
                                 if not isinstance(a, argparse._HelpAction)]}
    return {k: v for name, sub in subs[0].choices.items() for k, v in verbs(sub, (*path, name)).items()}


def test_every_verb_and_option_is_kept_in_order():
    assert list(verbs(build_parser()).items()) == list(CONTRACT.items())


def test_an_unknown_verb_lists_the_verbs_in_their_historic_order(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--socket", "/nonexistent/s", "frobnicate"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "doorphonectl: argument COMMAND: invalid choice: 'frobnicate' (choose from 'status', 'relay', 'log', "
        "'config', 'doctor', 'cloud', 'call', 'hangup', 'user', 'pin', 'card', 'tempkey', 'access', 'monitor', "
        "'capture', 'phone', 'face') "
        "(see --help)\n")
    with pytest.raises(SystemExit):
        main(["log", "x"])
    assert "(choose from 'doors', 'calls', 'level', 'captures')" in capsys.readouterr().err


def test_a_feature_module_adds_its_verbs_with_one_register_function(monkeypatch, capsys):
    def register(reg: Registry) -> None:
        reg.group("voice", "voice recognition")
        reg.command("voice list", "enrolled voices", lambda args: print(f"voices, json={args.json}") or 0,
                    arg("--limit", type=int))

    monkeypatch.setattr(cli, "FEATURES", (*cli.FEATURES, SimpleNamespace(register=register)))
    assert main(["voice", "list", "--json", "--limit", "3"]) == 0
    assert capsys.readouterr().out == "voices, json=True\n"
    assert list(verbs(cli.build_parser()))[-1] == "voice list"  # after every verb of the historic order
    with pytest.raises(SystemExit):
        main(["zzz"])
    assert "'tempkey', 'access', 'monitor', 'capture', 'phone', 'face', 'voice')" in capsys.readouterr().err


def run_nothing(args: argparse.Namespace) -> int:
    return 0


# One mistake a feature module could make, each added to an otherwise good registry.
MISTAKES = {
    "twice": lambda reg: reg.command("relay list", "again", run_nothing),
    "group twice": lambda reg: reg.group("relay", "again"),
    "no group": lambda reg: reg.command("door open", "open", run_nothing),
    "clash": lambda reg: reg.command("relay", "a command named like a group", run_nothing),
    "empty": lambda reg: reg.group("face", "no verbs"),
    "deep": lambda reg: reg.command("relay list all", "three words", run_nothing),
}


def broken_registry(case: str) -> Registry:
    reg = Registry()
    reg.group("relay", "doors")
    reg.command("relay list", "doors", run_nothing)
    MISTAKES[case](reg)
    return reg


@pytest.mark.parametrize(("case", "says"), [
    ("twice", "'relay list' registered twice"), ("group twice", "group 'relay' declared twice"),
    ("no group", "'door open': no such group"), ("clash", "'relay': the name of a group"),
    ("empty", "groups without a verb: face"), ("deep", "a command is one word or a group and a verb")])
def test_the_registry_refuses_what_argparse_would_build_wrong(case, says):
    with pytest.raises(ValueError, match=says):
        broken_registry(case).build(Parser(prog="t"), ())


def test_errors_that_echo_input_stay_one_harmless_line(capsys):
    assert one_line("a\nb\x1b[2J\u202ec\udcff ü") == "a\\nb\\x1b[2J\\u202ec\\udcff ü"
    with pytest.raises(SystemExit):
        main(["status", "x\ny\u202e"])
    assert capsys.readouterr().err == "doorphonectl: unrecognized arguments: x\\ny\\u202e (see --help)\n"
    assert main(["--socket", "/nonexistent/\n", "status"]) == 1
    assert capsys.readouterr().err == "doorphonectl: doorphoned is not running (no socket at /nonexistent/\\n)\n"


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_door_log_folds_repeated_refusals_and_reads_oldest_first(utc):
    entries = [{"id": 8, "ts": "2026-01-02T10:00:00+01:00", "door": None, "kind": "alarm", "reason": "tamper",
                "detail": {"active": True}},
               {"id": 7, "ts": "2026-01-02T08:00:00+00:00", "door": 1, "kind": "access", "granted": False,
                "credential": "pin", "subject": "?", "reason": "unknown_pin",
                "detail": {"count": 4, "last": "2026-01-02T08:05:00+00:00"}}]
    assert fmt_log(entries) == (
        "2026-01-02 08:00:00  #7      door 1  DENIED  pin (?): unknown_pin (x4, last 2026-01-02 08:05:00)\n"
        "2026-01-02 09:00:00  #8      unit    ALARM tamper raised")
    assert fmt_log([]) == "no entries"


def test_status_shows_lost_hardware_and_the_sip_line():
    sip = {"registration": {"configured": False}, "running": True, "listening": "udp:127.0.0.1:5060",
           "active_calls": [], "rejected": 2, "restarts": 1}
    status = {"version": "1", "pid": 9, "uptime_s": 61.6, "site": "Lobby", "timezone": "UTC", "log_level": 3,
              "config_source": "sim", "tamper": None,
              "features": [{"name": "readers", "state": "running", "error": "", "reader": "nfc",
                            "hardware_connected": False, "hardware": "pn532 lost", "restarts": 2},
                           {"name": "sip", "state": "running", "error": "", "sip": sip}],
              "doors": [], "store": {"path": "s.db", "bytes": 2048, "door_log_entries": 3},
              "credentials": {"users": 1, "private_pins": 0, "cards": 2, "temp_keys": 0}}
    assert fmt_status(status).splitlines() == [
        "doorphoned 1 (pid 9), up 62 s, site 'Lobby' [UTC], log level 3", "config: sim", "features:",
        "  readers    running  reader nfc  (2 restarts)  hardware pn532 lost", "  sip        running",
        "doors:", "  no doors configured",
        "sip: running on udp:127.0.0.1:5060, no registrar (peer to peer), 0 active calls, 2 refused, 1 restarts",
        "store: s.db (2 KiB, 3 door-log entries)", "credentials: 1 users (0 with a PIN, 2 cards), 0 temp keys"]


def test_status_shows_the_camera_process_state_and_whether_it_analyses():
    base = {"version": "1", "pid": 9, "uptime_s": 1, "site": "Lobby", "timezone": "UTC", "log_level": 3,
            "config_source": "sim", "tamper": None, "doors": [],
            "store": {"path": "s.db", "bytes": 0, "door_log_entries": 0},
            "credentials": {"users": 0, "private_pins": 0, "cards": 0, "temp_keys": 0}}
    idle = {"name": "camera", "state": "running", "error": "", "camera": "ok", "camera_error": "",
            "capture": "mjpeg", "active": False}
    lost = {**idle, "camera": "fault", "camera_error": "ConnectionError: camera stream lost"}
    lines = fmt_status({**base, "features": [idle, lost]}).splitlines()
    assert lines[3:5] == ["  camera     running  camera ok (mjpeg, idle)",
                          "  camera     running  camera fault: ConnectionError: camera stream lost"]
