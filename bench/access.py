#!/usr/bin/env python3
"""Access control at scale: 100k users + 100k temp keys stored.

Prints: bulk-load time and database size; decide() p50/p99 over a mix of PINs, cards, QR codes and
unknown credentials (target p99 < 1 ms); keypad PIN -> relay energised through hw-sim p50/p99
(target p99 < 20 ms); QR frame -> decision at 640x480 (target < 60 ms); daemon RSS at that scale.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import segno  # noqa: E402

from doorphoned.access.credentials import encode_qr  # noqa: E402
from doorphoned.access.credstore import CredentialStore  # noqa: E402
from doorphoned.access.decide import TempKeyRecord, UserRecord, decide  # noqa: E402
from doorphoned.access.devicekey import DeviceKey  # noqa: E402
from doorphoned.access.gate import StoreAccessView  # noqa: E402
from doorphoned.camera.qr import QrDecoder  # noqa: E402
from doorphoned.core.presentations import CardTap, PinEntry, QrScan  # noqa: E402
from doorphoned.core.schedule import WeeklyWindow  # noqa: E402
from doorphoned.core.store import DB_NAME, Store  # noqa: E402
from tests.procs import Daemon, HwSim  # noqa: E402

NOW = datetime.now(UTC)
# Decisions are taken on the coming Monday at noon: inside the users' office hours and the keys' validity.
AT = (NOW + timedelta(days=(7 - NOW.weekday()) % 7 or 7)).replace(hour=12, minute=0, second=0, microsecond=0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def figures(name: str, values: list[float], unit: str = "ms", target: str = "") -> None:
    print(f"{name}: p50 {pct(values, 50):.3f} {unit}  p99 {pct(values, 99):.3f} {unit}  "
          f"max {max(values):.3f} {unit}  (n={len(values)}){'  target ' + target if target else ''}")


def user_pin(i: int) -> str:
    return f"{1_000_000 + i:07d}"  # 7 digits: never equal to an 8-digit temp-key PIN


def key_pin(i: int) -> str:
    return f"{i * 13 + 1:08d}"


def load(state: Path, users: int, keys: int) -> CredentialStore:
    store = Store(state / DB_NAME)
    store.open()
    creds = CredentialStore(store, DeviceKey.load_or_create(state / "device.key"))
    office = (WeeklyWindow.parse("mon-fri 07:00-20:00"),)
    started = time.perf_counter()
    with creds.transaction():
        for i in range(users):
            creds.add_user(UserRecord(f"u{i}", f"User {i}", doors=frozenset({1, 2}), windows=office), NOW)
            creds.set_pin(f"u{i}", user_pin(i))
            creds.add_card(f"u{i}", f"04{i:06X}", NOW)
        for i in range(keys):
            key = TempKeyRecord(f"tk-{i}", f"Key {i}", frozenset({1}), "never", NOW - timedelta(days=1),
                                NOW + timedelta(days=30), each_door_counts=100)
            creds.add_temp_key(key, key_pin(i), NOW)
    print(f"loaded {users} users (PIN + card each) and {keys} temp keys in {time.perf_counter() - started:.1f} s")
    return creds


def bench_decide(creds: CredentialStore, users: int, keys: int, n: int) -> None:
    view = StoreAccessView(creds, frozenset({1, 2}), ZoneInfo("UTC"))
    rng = random.Random(7)
    credentials = []
    for _ in range(n):
        kind = rng.randrange(5)
        if kind == 0:
            credentials.append(PinEntry(user_pin(rng.randrange(users))))
        elif kind == 1:
            credentials.append(CardTap(f"04{rng.randrange(users):06X}"))
        elif kind == 2:
            credentials.append(PinEntry(key_pin(rng.randrange(keys))))
        elif kind == 3:
            i = rng.randrange(keys)
            credentials.append(QrScan(encode_qr(f"tk-{i}", key_pin(i))))
        else:
            credentials.append(PinEntry(f"{rng.randrange(10**8):08d}"))
    times, granted = [], 0
    for credential in credentials:
        started = time.perf_counter()
        decision = decide(credential, 1, AT, view)
        times.append((time.perf_counter() - started) * 1000)
        granted += decision.granted
    figures(f"decide() with {users} users + {keys} temp keys stored", times, target="p99 < 1 ms")
    print(f"  ({granted} of {n} granted: PINs, cards, temp-key PINs and QR codes; the rest unknown)")


def camera_frame(text: str | None, rng: random.Random) -> np.ndarray:
    frame = np.full((480, 640, 3), 90, np.uint8)
    cv2.randn(frame, (90, 90, 90), (25, 25, 25))
    if text:
        qr = segno.make_qr(text, error="m")
        matrix = np.array(list(qr.matrix_iter(border=4)), dtype=np.uint8)
        img = np.where(matrix == 1, 20, 235).astype(np.uint8)
        img = cv2.resize(img, (220, 220), interpolation=cv2.INTER_NEAREST)
        rot = cv2.getRotationMatrix2D((110, 110), rng.uniform(-15, 15), 1.0)
        img = cv2.warpAffine(img, rot, (220, 220), borderValue=235)
        x, y = rng.randrange(20, 400), rng.randrange(20, 240)
        frame[y:y + 220, x:x + 220] = cv2.cvtColor(cv2.GaussianBlur(img, (3, 3), 0), cv2.COLOR_GRAY2BGR)
    return frame


def bench_qr(creds: CredentialStore, keys: int, n: int) -> None:
    view = StoreAccessView(creds, frozenset({1, 2}), ZoneInfo("UTC"))
    decoder, rng = QrDecoder(), random.Random(3)
    with_code, without, decoded = [], [], 0
    for _i in range(n):
        k = rng.randrange(keys)
        frame = camera_frame(encode_qr(f"tk-{k}", key_pin(k)), rng)
        started = time.perf_counter()
        texts = decoder.decode(frame)
        ok = any(decide(QrScan(t), 1, AT, view).granted for t in texts)
        with_code.append((time.perf_counter() - started) * 1000)
        decoded += ok
        empty = camera_frame(None, rng)
        started = time.perf_counter()
        decoder.decode(empty)
        without.append((time.perf_counter() - started) * 1000)
    figures("QR frame -> decision, 640x480 with a code", with_code, target="< 60 ms")
    print(f"  ({decoded} of {n} frames decoded and granted)")
    figures("QR frame, 640x480 without a code", without)


def bench_keypad(state: Path, n: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-access-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    daemon = Daemon(home / "d", sim, env={"DOORPHONED_DAEMON_STATE_DIR": str(state),
                                          "DOORPHONED_KEYPAD_DOORS": "[1, 2]",
                                          "DOORPHONED_DOORS_1_HOLD_TIME": "1", "DOORPHONED_DOORS_2_HOLD_TIME": "1"})
    daemon.socket = state / "control.sock"
    try:
        daemon.start()
        daemon.ctl("user", "add", "Bench one", "--id", "bench-1", "--doors", "1")
        daemon.ctl("pin", "set", "bench-1", input="7351\n")
        daemon.ctl("user", "add", "Bench two", "--id", "bench-2", "--doors", "2")
        daemon.ctl("pin", "set", "bench-2", input="7352\n")
        events = sim.watch()
        control, replies = sim.control()
        times = []
        for i in range(n):
            door = 1 + i % 2
            started = time.perf_counter()
            control.sendall(json.dumps({"op": "keypad", "keys": f"735{door}#"}).encode() + b"\n")
            replies.readline()
            while True:
                event = json.loads(events.readline())
                if event.get("ev") == "relay" and event["relay"] == door and event["energised"]:
                    times.append((time.perf_counter() - started) * 1000)
                    break
            if door == 2:
                while True:
                    event = json.loads(events.readline())
                    if event.get("ev") == "relay" and event["relay"] == 2 and not event["energised"]:
                        break
        figures("keypad PIN -> relay energised (hw-sim, same store)", times, target="p99 < 20 ms")
        assert daemon.proc is not None
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        print(f"daemon RSS with that store: {rss / 1024:.1f} MB")
    finally:
        daemon.kill()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--entries", type=int, default=200)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-access-state-"))
    creds = load(state, args.users, args.keys)
    creds.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in state.glob(DB_NAME + "*"))
    print(f"database size: {size / 1e6:.1f} MB ({DB_NAME}, WAL checkpointed)")
    bench_decide(creds, args.users, args.keys, args.decisions)
    bench_qr(creds, args.keys, args.frames)
    creds.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    creds._store.close()
    bench_keypad(state, args.entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
