"""Property fuzz of signed keys through one long-lived daemon that trusts the fuzz's cloud key.

The hostile texts of tests/unit/test_signed_keys_fuzz.py go to ``access.check --qr`` over the control socket (the
decision a scan gets, without the camera's decode time), inside frames that are themselves hostile now and
then (wrong types, NaN tokens, duplicate keys, deep nesting); a sample goes the whole way through hw-sim's
camera and the QR reader. Invariant: every request is answered (a refusal, or an error), nothing opens
(hw-sim's relay history is unchanged), nothing changes in the store (no use, no revocation, no door-log entry
from ``access.check``), the daemon lives and logs no traceback; a genuine key still opens afterwards.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.access.signedkeys import Terms, sign
from doorphoned.control.server import MAX_REQUEST
from tests.e2e.test_fuzz_control import Conn, RawJson, encode, obj
from tests.fuzz import fuzz_cases, hostile_numbers
from tests.procs import wait_for
from tests.unit.test_signed_keys import CLOUD
from tests.unit.test_signed_keys_fuzz import GENUINE, texts

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

CAMERA_CASES = int(os.environ.get("SIGNED_FUZZ_CAMERA", "5"))
frames = st.one_of(
    st.builds(lambda t: obj([("cmd", "access.check"), ("args", RawJson(obj([("door", 1), ("qr", t)])))]), texts),
    st.builds(lambda t: obj([("cmd", "access.check"), ("args", RawJson(obj([("door", 1), ("qr", t)])))]), texts),
    st.builds(lambda v: obj([("cmd", "access.check"), ("args", RawJson(obj([("door", 1), ("qr", v)])))]),
              st.one_of(hostile_numbers, st.lists(texts, max_size=2), st.none(), st.booleans())),
    st.builds(lambda t, u: obj([("cmd", "access.check"),
                                ("args", RawJson(obj([("door", 1), ("qr", t), ("qr", u)])))]), texts, texts),
    st.builds(lambda n: obj([("cmd", "access.check"), ("args", RawJson(
        '{"door": 1, "qr": ' + "[" * n + '"DPS1:AAAA"' + "]" * n + "}"))]), st.integers(2, 5000)),
    st.builds(lambda t, tok: obj([("cmd", "access.check"), ("args", RawJson(
        obj([("door", RawJson(tok)), ("qr", t)])))]), texts, st.sampled_from(["NaN", "Infinity", "-1e999"])),
)


def counts(db_path) -> dict[str, int]:
    """Rows that a decision or a revocation would add, read from the real SQLite file (read-only)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("signed_key_uses", "revoked_keys", "door_log", "key_uses", "temp_keys")}


def test_signed_key_fuzz_one_daemon(daemon_factory, hwsim, tmp_path):
    pem = tmp_path / "cloud.pub.pem"
    pem.write_bytes(CLOUD.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    d = daemon_factory(env={"DOORPHONED_ACCESS_CLOUD_PUBLIC_KEYS": json.dumps([str(pem)]),
                            "DOORPHONED_ACCESS_SITE_ID": "site-a"})
    d.start()
    db = d.state_dir / "doorphoned.db"
    relays_before = [(r["relay"], r["energise_count"]) for r in hwsim.relays()]
    before = counts(db)
    conn = Conn(str(d.socket))
    seen = {"answered": 0, "errors": 0}

    @settings(max_examples=fuzz_cases(200), deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames)
    def fuzz(frame):
        data = encode(frame)
        if len(data) >= MAX_REQUEST - 64:  # over the line limit the server answers and closes: its own connection
            big = Conn(str(d.socket))
            reply = big.ask(data)
            big.close()
        else:
            reply = conn.ask(data)
        seen["answered"] += 1
        if not reply["ok"]:
            assert reply["error"] and "internal error" not in reply["error"], (frame[:200], reply)
            seen["errors"] += 1
            return
        result = reply["result"]
        if not any(genuine in frame for genuine in GENUINE):  # a genuine key may be valid at this instant
            assert result["granted"] is False, (frame[:300], result)
            assert result["reason"] in ("malformed", "bad_signature", "unknown"), result

    fuzz()
    conn.close()
    assert seen["answered"] >= fuzz_cases(200) and seen["errors"] < seen["answered"]
    assert counts(db) == before  # access.check records nothing, takes no use
    assert [(r["relay"], r["energise_count"]) for r in hwsim.relays()] == relays_before

    # A sample the whole way: hw-sim's camera, the QR reader, the gate (each one presentation).
    wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["reader"] == "ok",
             timeout=60, what="QR reader up")
    now = datetime.now(UTC).replace(microsecond=0)
    fresh = sign(Terms("tk-live", "site-a", frozenset({1}), now - timedelta(hours=1), now + timedelta(days=1)),
                 CLOUD)
    sample = [fresh[:40] + ("A" if fresh[40] != "A" else "B") + fresh[41:] for _ in range(1)]
    cuts = [6 + (i * 7) % (len(fresh) - 6) for i in range(CAMERA_CASES - 1)]  # one character gone, anywhere
    sample += [fresh[:at] + fresh[at + 1:] for at in cuts]
    assert fresh not in sample  # (the full run's first version cut past the end: the genuine key, which opened)
    for text in sample:
        hwsim.cmd("camera", "clear")
        wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["qr_in_view"] == 0,
                 timeout=20, what="the view empty")
        hwsim.cmd("camera", "qr", text)
        wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["qr_in_view"] == 1,
                 timeout=30, what="the code seen")
    refusals = wait_for(lambda: (e := d.door_log(kind="access")) and sum(x["detail"].get("count", 1) for x in e)
                        >= len(sample) and e, timeout=30, what="every camera sample refused")
    assert all(not e["granted"] and e["reason"] in ("malformed", "bad_signature") for e in refusals), refusals
    assert [(r["relay"], r["energise_count"]) for r in hwsim.relays()] == relays_before
    hwsim.cmd("camera", "clear")
    wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["qr_in_view"] == 0,
             timeout=20, what="the view empty")
    hwsim.cmd("camera", "qr", fresh)  # the daemon still opens for a genuine key
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=30, what="relay 1 by the genuine key")
    assert d.ctl_json("status")["pid"] == d.proc.pid
    assert "Traceback" not in d.log_text() and "internal error" not in d.log_text()
    hwsim.cmd("camera", "clear")
