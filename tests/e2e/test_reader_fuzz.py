"""Property fuzzing of the credential readers through the real daemon and hw-sim, one long-lived daemon per test.

Invariant for every case: nothing opens unless it is a valid credential, nothing changes in the store (users,
cards, temp keys, uses), an error is answered where a reply is expected, the daemon lives, and the reader
still works afterwards (a valid PIN, card or QR code still opens).

Which path each interface takes (and why):
- keypad: every case is raw bytes written to hw-sim's pty and read by the daemon's serial reader (the
  production path end to end); the test mirrors the keypad protocol to know how many entries were submitted
  and waits until the door log has counted every one of them.
- QR: every case goes through the daemon's QR parser and access decision over the control socket
  (``access.check``, the function the gate calls); a sample is also rendered by hw-sim's camera, decoded by
  the camera process and handed to the gate (rendering takes ~0.1-0.3 s a case, so not all 10,000).
- NFC: every case goes through UID normalisation and the decision over the control socket; a sample of
  card-shaped UIDs (and repeated taps, back to back) is presented by hw-sim's card to the nfcpy reader
  (a simulated tap takes ~1 s); hw-sim's own tap request is fuzzed with UIDs of 0-20 bytes and odd hex.

``DOORPHONE_FUZZ_READERS_EXAMPLES`` sets the number of cases per interface (``make test``: a fast pass of
200; ``make fuzz-readers``: 10,000) and ``DOORPHONE_FUZZ_READERS_RENDERED`` the rendered QR sample (8; 300).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.core.presentations import CredentialFormatError, normalise_card_uid
from doorphoned.readers.keypad import KeypadParser
from tests.dates import from_now
from tests.procs import wait_for

EXAMPLES = int(os.environ.get("DOORPHONE_FUZZ_READERS_EXAMPLES", "200"))
RENDERED = int(os.environ.get("DOORPHONE_FUZZ_READERS_RENDERED", "8"))
PIN = "73950284"
CARD = "04A1B2C3"
HOSTILE = ["\x00", "\u202e", "\ud800", "\udfff", "\ufeff", "\u2028", "\xff", "NaN", "Infinity", "-0", "1e999",
           "%00", "\\", '"', "\n", "#", "*"]
FUZZ_ENV = {
    # Short lockouts, so that both the decision and the lockout path see many entries, and a long digit
    # timeout, so that a loaded machine never splits one case's entry in two.
    "DOORPHONED_ACCESS_LOCKOUT_FAILURES": "20", "DOORPHONED_ACCESS_LOCKOUT_WINDOW": "5",
    "DOORPHONED_ACCESS_LOCKOUT_FIRST": "1", "DOORPHONED_ACCESS_LOCKOUT_MAX": "1",
    "DOORPHONED_KEYPAD_DIGIT_TIMEOUT": "60", "DOORPHONED_DOORS_1_HOLD_TIME": "1", "DOORPHONED_DOORS_2_HOLD_TIME": "1",
}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


# ---------------------------------------------------------------- strategies
def _hostile_text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(HOSTILE) | st.text(max_size=4) | st.characters(codec=None),
                    max_size=max_size).map("".join)


keypad_bytes = st.one_of(
    st.binary(max_size=64),  # line noise
    st.text(alphabet="0123456789#*", max_size=40).map(str.encode),  # keypad-shaped
    st.lists(st.sampled_from([b"\x00", b"\xff", b"#", b"*", b"\r\n", b"2580", PIN[:7].encode(), b"\x1b[A",
                              "\u202e".encode(), b"\xed\xa0\x80", b"0" * 17]), max_size=30).map(b"".join),
    st.builds(lambda u, n: u * n, st.sampled_from([b"1", b"#", b"\x00", b"\xff"]), st.integers(1, 4000)),  # huge
    st.builds(lambda u, n: u * n, st.sampled_from([b"12#", b"9999#", b"0" * 17 + b"#"]), st.integers(1, 200)),  # bursts
)

wrong_types: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


qr_texts = st.one_of(
    st.builds(lambda kid, pin, check: f"DPK1:{kid}:{pin}:{check}", _hostile_text(12) | st.just("tk-0000000000"),
              st.text(alphabet="0123456789", min_size=0, max_size=10) | _hostile_text(10),
              st.text(alphabet="0123456789abcdefABCDEF", max_size=10) | _hostile_text(10)),  # wrong check digits
    st.builds(lambda v, rest: f"DPK{v}:{rest}", st.integers(-1, 99), _hostile_text(30)),
    st.sampled_from(["https://example.com/", "WIFI:S:x;T:WPA;P:p;;", "mailto:a@b", "tel:+49", "otpauth://totp/x",
                     "javascript:alert(1)", "BEGIN:VCARD", "DPK1:", "DPK1::::", "dpk1:x:12345678:00000000"]),
    _hostile_text(60),
    st.builds(lambda unit, n: unit * n, st.sampled_from(["D", "\u202e", "\x00", "DPK1:"]), st.integers(100, 20_000)),
)

card_uids = st.one_of(
    st.binary(min_size=0, max_size=20).map(lambda b: b.hex()),  # 0-20 bytes
    st.binary(min_size=1, max_size=12).map(lambda b: b.hex()[1:]),  # odd hex
    st.binary(min_size=4, max_size=10).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    _hostile_text(30),
    st.builds(lambda n: "0" * n, st.integers(21, 10_000)),
)


RAW_REQUESTS = [
    b'{"cmd": "access.check", "args": {"door": 1, @: ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    b'{"cmd": "access.check", "args": {"door": 1, @: ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}}",
    b'{"cmd": "access.check", "args": {"door": NaN, @: "DPK1:x:12345678:00000000"}}',
    b'{"cmd": "access.check", "args": {"door": Infinity, @: "x"}}',
    b'{"cmd": "access.check", "args": {"door": 1, @: "x", @: "DPK1:y:1:2"}}',
    b'{"cmd": "access.check", "args": {"door": 1, "door": 2, @: "x"}}',
]


# ---------------------------------------------------------------- helpers
class Control:
    """One connection to the daemon's control socket for many requests (reopened when the daemon hangs up
    on a request over its size limit, which it answers first)."""

    def __init__(self, path: os.PathLike[str]) -> None:
        self.path = path
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(self.path))
        self.replies = self.sock.makefile("rb")

    def call(self, cmd: str, args: Any) -> dict[str, Any]:
        return self.raw(json.dumps({"cmd": cmd, "args": args}).encode())

    def raw(self, line: bytes) -> dict[str, Any]:
        try:
            self.sock.sendall(line + b"\n")
            answer = self.replies.readline()
        except OSError:
            answer = self.replies.readline() if not self.sock._closed else b""  # type: ignore[attr-defined]
        reply: dict[str, Any] = json.loads(answer) if answer else {"ok": False, "error": "hung up without a reply"}
        if not answer or str(reply.get("error", "")).startswith("request larger than"):
            self.close()
            self._connect()
        return reply

    def close(self) -> None:
        self.sock.close()


def _hwsim_request(control: tuple[socket.socket, Any], request: dict[str, Any]) -> dict[str, Any]:
    sock, replies = control
    sock.sendall(json.dumps(request).encode() + b"\n")
    return json.loads(replies.readline())


def _store_snapshot(d) -> Any:
    """Everything a reader must never change: users, cards, PINs, temp keys and their uses."""
    with sqlite3.connect(f"file:{d.state_dir / 'doorphoned.db'}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN"
                                           " ('door_log', 'lockouts', 'outbox', 'calls', 'counters', 'cloud_commands')"
                                           " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables}


def _counted_entries(d) -> int:
    """Access decisions recorded, folded repeats included (read from the real SQLite file)."""
    with sqlite3.connect(f"file:{d.state_dir / 'doorphoned.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT coalesce(sum(coalesce(json_extract(detail, '$.count'), 1)), 0) FROM door_log"
                         " WHERE kind = 'access'").fetchone()
        return int(row[0])


def _granted(d) -> int:
    with sqlite3.connect(f"file:{d.state_dir / 'doorphoned.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM door_log WHERE kind = 'access' AND granted = 1").fetchone()[0])


def _pulses(hwsim) -> int:
    return sum(r["energise_count"] for r in hwsim.relays())


def _unit(daemon_factory):
    d = daemon_factory(env=FUZZ_ENV)
    d.start()
    user = d.ctl_json("user", "add", "Valid", "--doors", "1")["id"]
    d.ctl("pin", "set", user, input=PIN + "\n")
    d.ctl("card", "add", user, CARD)
    key = d.ctl_json("tempkey", "create", "--name", "Valid", "--doors", "1", "--end", from_now(days=1),
                     "--count", "100")
    return d, key


def _alive(d, pid: int) -> None:
    assert d.proc.poll() is None and d.ctl_json("status")["pid"] == pid
    assert "Traceback" not in d.log_text()


# ---------------------------------------------------------------- keypad
def test_keypad_fuzz_raw_bytes_on_the_serial_line(daemon_factory, hwsim):
    d, _ = _unit(daemon_factory)
    pid, before = d.proc.pid, _store_snapshot(d)
    mirror = KeypadParser(16, 60.0)
    sent = {"entries": 0, "cases": 0}
    control = hwsim.control()

    @SETTINGS
    @given(keypad_bytes)
    def fuzz(data: bytes) -> None:
        keys = "*" + data.decode("latin-1")[:4095]  # '*' first: each case starts from a clear entry
        entries = mirror.feed(keys.encode("latin-1"), 0.0)
        assert all(e.digits != PIN for e in entries)  # a case that types the valid PIN is not line noise
        assert _hwsim_request(control, {"op": "keypad", "keys": keys}) == {"ok": True}
        sent["entries"] += len(entries)
        sent["cases"] += 1

    fuzz()
    control[0].close()
    wait_for(lambda: _counted_entries(d) >= sent["entries"], timeout=600, interval=1,
             what=f"all {sent['entries']} keypad entries decided")
    assert _counted_entries(d) == sent["entries"]  # every submitted entry answered once, none invented
    assert _pulses(hwsim) == 0 and _granted(d) == 0  # nothing opened
    assert _store_snapshot(d) == before
    _alive(d, pid)
    wait_for(lambda: d.ctl_json("access", "check", "--door", "1", "--pin", PIN)["granted"], timeout=60,
             interval=0.5, what="the keypad lockout to end")
    hwsim.cmd("keypad", f"*{PIN}#")  # the reader still works
    wait_for(lambda: _pulses(hwsim) == 1, timeout=20, what="the valid PIN to open")
    print(f"keypad fuzz: {sent['cases']} cases, {sent['entries']} entries submitted")


# ---------------------------------------------------------------- QR
@pytest.mark.slow
def test_qr_fuzz_payloads_through_the_decision_and_the_camera(daemon_factory, hwsim):
    d, key = _unit(daemon_factory)
    pid, before = d.proc.pid, _store_snapshot(d)
    ctl = Control(d.socket)
    seen = {"cases": 0, "errors": 0}

    @SETTINGS
    @given(qr_texts | wrong_types, st.sampled_from([1, 2, 3, 99]))
    def fuzz(text: Any, door: int) -> None:
        reply = ctl.call("access.check", {"door": door, "qr": text})
        assert set(reply) >= {"ok"} and (reply["ok"] or reply.get("error")), reply
        assert "internal error" not in reply.get("error", ""), (text, reply)
        if reply["ok"]:
            assert not reply["result"]["granted"], (text, reply)
        seen["cases"] += 1
        seen["errors"] += not reply["ok"]

    fuzz()
    for raw in RAW_REQUESTS:  # shapes json.dumps cannot make: deep nesting, NaN tokens, duplicate keys
        reply = ctl.raw(raw.replace(b"@", b'"qr"'))
        assert reply["ok"] is False or not reply["result"].get("granted"), (raw[:80], reply)
        seen["cases"] += 1
    ctl.close()
    wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["reader"] == "ok",
             timeout=30, what="camera reader up")
    rendered = _render_sample(d, hwsim)
    assert _pulses(hwsim) == 0 and _granted(d) == 0
    assert _store_snapshot(d) == before
    _alive(d, pid)
    hwsim.cmd("camera", "qr", key["qr"])  # the reader still works
    wait_for(lambda: _pulses(hwsim) == 1, timeout=30, what="the valid QR code to open")
    print(f"QR fuzz: {seen['cases']} cases through access.check ({seen['errors']} refused as bad requests), "
          f"{rendered['shown']} rendered by hw-sim ({rendered['read']} read by the camera process)")


def _camera(d) -> dict[str, Any]:
    return next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")


def _render_sample(d, hwsim) -> dict[str, int]:
    """Show a sample of hostile payloads to the camera; each is decoded and handed to the gate."""
    counts = {"shown": 0, "read": 0}
    control = hwsim.control()

    @settings(max_examples=RENDERED, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(qr_texts.filter(lambda t: len(t) <= 300))
    def show(text: str) -> None:
        reads = _camera(d)["reads"]
        reply = _hwsim_request(control, {"op": "camera", "action": "qr", "text": text})
        if not reply["ok"]:  # not renderable (lone surrogates): hw-sim says why
            assert reply["error"]
            return
        counts["shown"] += 1
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and _camera(d)["reads"] == reads:
            time.sleep(0.1)
        counts["read"] += _camera(d)["reads"] > reads
        _hwsim_request(control, {"op": "camera", "action": "clear"})

    show()
    control[0].close()
    return counts


# ---------------------------------------------------------------- NFC
def test_nfc_fuzz_uids_through_the_decision_hwsim_and_the_reader(daemon_factory, hwsim):
    d, _ = _unit(daemon_factory)
    pid, before = d.proc.pid, _store_snapshot(d)
    ctl = Control(d.socket)
    control = hwsim.control()
    seen = {"cases": 0, "taps": 0}

    @SETTINGS
    @given(card_uids | wrong_types, st.sampled_from([1, 2, 99]))
    def fuzz(uid: Any, door: int) -> None:
        reply = ctl.call("access.check", {"door": door, "card": uid})
        assert "internal error" not in reply.get("error", ""), (uid, reply)
        assert reply["ok"] or reply.get("error"), reply
        if reply["ok"] and reply["result"]["granted"]:
            assert door == 1 and _normalised(uid) == CARD, (uid, reply)
        seen["cases"] += 1

    fuzz()
    ctl.close()

    @settings(max_examples=max(EXAMPLES // 10, 50), deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(card_uids | wrong_types)
    def fuzz_hwsim_tap(uid: Any) -> None:
        if isinstance(uid, str) and _normalised(uid) is not None:
            return  # a card-shaped UID: presented below, where the tap is awaited
        reply = _hwsim_request(control, {"op": "nfc_tap", "uid": uid, "timeout": 0.5})
        assert reply["ok"] is False and reply["error"], (uid, reply)

    fuzz_hwsim_tap()
    control[0].close()
    taps = _card_taps(max(RENDERED // 2, 4))
    for uid in taps:  # real presentations: random 4/7-byte UIDs, some twice in a row (a burst)
        result = hwsim.cmd("nfc", "tap", uid, "--timeout", "10", check=False)
        seen["taps"] += result.returncode == 0
    assert seen["taps"] >= len(taps) // 2  # most were read by the reader
    assert _pulses(hwsim) == 0 and _granted(d) == 0
    assert _store_snapshot(d) == before
    _alive(d, pid)
    hwsim.cmd("nfc", "tap", CARD, "--timeout", "10")  # the reader still works
    wait_for(lambda: _pulses(hwsim) == 1, timeout=20, what="the valid card to open")
    print(f"NFC fuzz: {seen['cases']} cases through access.check, {seen['taps']} of {len(taps)} real taps read")


def _normalised(uid: Any) -> str | None:
    try:
        return normalise_card_uid(uid) if isinstance(uid, str) else None
    except CredentialFormatError:
        return None


def _card_taps(n: int) -> list[str]:
    import random

    rng = random.Random(n)
    uids = []
    while len(uids) < n:
        uid = bytes(rng.randrange(256) for _ in range(rng.choice((4, 7)))).hex().upper()
        if uid != CARD:
            uids += [uid, uid] if rng.random() < 0.3 else [uid]
    return uids[:n]
