#!/usr/bin/env python3
"""Offline-signed temp keys: signature checks per second, text sizes, and QR shown -> relay for a signed key.

In-process (one core): ``parse_signed`` + ``Trust.signer`` (the ECDSA P-256 verify) per second, the whole pure
decision per second, and the cloud's signing rate. Then the text length and QR version of a typical key and of
the largest one the format allows. Then a real unit (its own hw-sim and doorphoned --sim, trusting a fresh
cloud key, no cloud link): a signed key and a synced ``DPK1`` key are each shown ``--shows`` times to hw-sim's
camera, alternately; the time runs from the ``camera qr`` request to the relay energised (hw-sim's watch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import segno  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from doorphoned.access.decide import decide  # noqa: E402
from doorphoned.access.signedkeys import Terms, Trust, TrustedKey, parse_signed, sign  # noqa: E402
from doorphoned.core.presentations import QrScan  # noqa: E402
from doorphoned.core.schedule import WeeklyWindow  # noqa: E402
from tests.latency import percentile  # noqa: E402
from tests.procs import Daemon, HwSim, wait_for  # noqa: E402


class View:
    """The decision's reads, in memory: what is measured is the format and the signature, not SQLite."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    def door_ids(self):
        return frozenset({1, 2})

    def timezone(self):
        from zoneinfo import ZoneInfo

        return ZoneInfo("UTC")

    def trust(self):
        return self._trust

    def revoked(self, key_id):
        return False

    def key_by_id(self, key_id):
        return None

    def signed_key_uses(self, key_id, door):
        return 0


def rate(func, seconds: float) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        func()
        count += 1
    return count / (time.perf_counter() - started)


def in_process(seconds: float) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    terms = Terms("tk-courier-0001", "site-a", frozenset({1}), now - timedelta(hours=1), now + timedelta(days=1),
                  "never", 2, None, (), "Courier")
    text = sign(terms, key)
    others = [TrustedKey(f"old {i}", ec.generate_private_key(ec.SECP256R1()).public_key()) for i in range(3)]
    trust = Trust((*others, TrustedKey("current", key.public_key())), frozenset({"site-a"}))
    verify = rate(lambda: trust.signer(parse_signed(text)), seconds)
    whole = rate(lambda: decide(QrScan(text), 1, now, View(trust)), seconds)
    signing = rate(lambda: sign(terms, key), seconds)
    print(f"parse + signature check: {verify:.0f} verifications/s ({1e6 / verify:.0f} us each; 4 trusted keys)")
    print(f"whole pure decision of a signed QR: {whole:.0f}/s ({1e6 / whole:.0f} us each)")
    print(f"cloud signing (deterministic ECDSA P-256): {signing:.0f} keys/s")
    largest = Terms("k" * 40, "s" * 64, frozenset(range(1, 17)), now, now + timedelta(days=365), "weekly", None,
                    WeeklyWindow(frozenset({0, 1, 2, 3, 4}), 8 * 60, 18 * 60),
                    tuple(f"{'u' * 60}-{i:03d}" for i in range(8)), "n" * 32)
    for what, sample in (("typical (never, count 2, name Courier)", text), ("largest the format allows", sign(
            largest, key))):
        qr = segno.make_qr(sample, error="m")
        print(f"text {what}: {len(sample)} characters, QR version {qr.version} ({qr.mode}, error level M)")


def through_the_unit(shows: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-signed-"))
    key = ec.generate_private_key(ec.SECP256R1())
    pem = home / "cloud.pub.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    daemon = Daemon(home / "d", sim, env={"DOORPHONED_DOORS_1_HOLD_TIME": "1", "DOORPHONED_ACCESS_SITE_ID": "site-a",
                                          "DOORPHONED_ACCESS_CLOUD_PUBLIC_KEYS": json.dumps([str(pem)])})
    try:
        daemon.start()
        wait_for(lambda: next(f for f in daemon.ctl_json("status")["features"] if f["name"] == "qr")["reader"]
                 == "ok", timeout=60, what="QR reader up")
        now = datetime.now(UTC).replace(microsecond=0)
        texts = {"signed (DPS1)": sign(Terms("tk-bench", "site-a", frozenset({1}), now - timedelta(hours=1),
                                             now + timedelta(days=1), "daily", None,
                                             WeeklyWindow(frozenset(range(7)), 0, 1440)), key),
                 "synced (DPK1)": daemon.ctl_json("tempkey", "create", "--name", "Bench", "--doors", "1", "--repeat",
                                                  "daily", "--end", (now + timedelta(days=1)).isoformat())["qr"]}
        times: dict[str, list[float]] = {name: [] for name in texts}
        events = sim.watch()
        control, replies = sim.control()

        def ask(request: dict) -> None:
            control.sendall(json.dumps(request).encode() + b"\n")
            replies.readline()

        for _ in range(shows):
            for name, text in texts.items():
                ask({"op": "camera", "action": "clear"})
                wait_for(lambda: not sim.relay(1)["energised"] and next(
                    f for f in daemon.ctl_json("status")["features"] if f["name"] == "qr")["qr_in_view"] == 0,
                    timeout=30, what="relay released and the view empty")
                started = time.perf_counter()
                ask({"op": "camera", "action": "qr", "text": text})
                while True:
                    event = json.loads(events.readline())
                    if event.get("ev") == "relay" and event["relay"] == 1 and event["energised"]:
                        times[name].append((time.perf_counter() - started) * 1000)
                        break
        for name, values in times.items():
            print(f"QR shown -> relay energised, {name} key ({len(values)}): p50 {percentile(values, 50):.1f} ms  "
                  f"p99 {percentile(values, 99):.1f} ms  max {max(values):.1f} ms")
        ask({"op": "camera", "action": "clear"})
    finally:
        daemon.kill()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per in-process rate")
    parser.add_argument("--shows", type=int, default=50, help="QR shows per key through the unit (0: none)")
    args = parser.parse_args()
    in_process(args.seconds)
    if args.shows:
        through_the_unit(args.shows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
