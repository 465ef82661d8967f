#!/usr/bin/env python3
"""Face recognition figures (issue 12): enrolment, 1:N matching, frame -> decision, the worker's memory, error
rates on the test photos.

- enrolment: one photo through the enrolment path (decode, checks, HOG, landmarks, encoding), per photo of
  face_recognition's test images (the engine loaded once; the enrolment process adds its ~1-9 s start);
- 1:N: ``Matcher.match`` against N random templates (one per user, one in 100 a near twin of another), at each of
  ``--sizes``: p50/p99 over ``--probes`` probes of each kind (a match at ~0.3, a near-tie between twins, an
  unknown face ~1.1 away), next to the full float32 scan (the former match) timed alternately on the same probes;
  the templates left for the exact distance; the verdicts, the first ``--checks`` compared with the exact brute
  force; the matcher's build time (what a reload costs) and its memory beyond the gallery;
- frame -> decision, through the real worker process (``python -m doorphoned.face.worker``) holding
  ``--users`` users' templates (each count in turn) in a real SQLite store: 640x480 frames of hw-sim's
  picture of obama3.jpg (the enrolled user is enrolled from obama.jpg and obama2.jpg) written to its frame
  socket at the feed's rate, as the camera process does; from the first frame of a presence to the
  ``match`` event (K of N frames), and the worker's per-frame time; then the worker's RSS (/proc);
- false accepts / rejects: every pair of test photos, same person vs different, at ``[face] threshold``.

The machine is shared: the figures are provisional, printed with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in the worker: one BLAS thread (the unit has 2 cores)
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hw-sim"))

from doorphoned.core.devicekey import DeviceKey  # noqa: E402
from doorphoned.core.store import Store  # noqa: E402
from doorphoned.face.config import FaceConfig  # noqa: E402
from doorphoned.face.engine import FaceEngine  # noqa: E402
from doorphoned.face.enrol import enrol_photo  # noqa: E402
from doorphoned.face.imagecheck import QualityLimits, decode_photo  # noqa: E402
from doorphoned.face.matcher import Match, Matcher, distances, judge  # noqa: E402
from doorphoned.face.store import FaceStore, Gallery  # noqa: E402
from tests.facephotos import photos  # noqa: E402

PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg", "biden.jpg"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_enrol(engine: FaceEngine) -> dict[str, float]:
    times = {}
    for name in PHOTOS:
        data = (photos() / name).read_bytes()
        started = time.perf_counter()
        enrol_photo(engine, data, QualityLimits())
        times[name] = round((time.perf_counter() - started) * 1000)
    return times


def bench_gallery(size: int, rng: np.random.Generator) -> Gallery:
    """``size`` random templates (one per user, N(0, 0.09) as dlib's spread), one user in 100 the "twin" of the user
    before (their templates 0.1 apart: siblings), so that a probe can sit within the margin of two users."""
    matrix = rng.normal(0, 0.09, (size, 128))
    twins = np.arange(1, size, 100)
    matrix[twins] = matrix[twins - 1] + _noise(rng, len(twins), 0.1)
    return Gallery(tuple(f"u{i:06d}" for i in range(size)), matrix.astype(np.float32), 1)


def _noise(rng: np.random.Generator, count: int, length: float) -> np.ndarray:
    """``count`` random vectors of the given length."""
    around = rng.normal(0, 1, (count, 128))
    return length * around / np.linalg.norm(around, axis=1, keepdims=True)


def bench_probes(gallery: Gallery, probes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The three kinds of probe: a user's template + 0.3 of noise (a match), the middle of two twins + 0.25 (a
    near-tie within the margin: ambiguous), a random face (unknown, ~1.1 from everyone)."""
    m, size = gallery.matrix, len(gallery.owners)
    users = rng.choice([i for i in range(size) if i % 100 > 1], probes)  # no twin: a clear match
    twins = rng.choice(np.arange(1, size, 100), probes)
    return {"match": (m[users] + _noise(rng, probes, 0.3)).astype(np.float32),
            "near-tie": ((m[twins] + m[twins - 1]) / 2 + _noise(rng, probes, 0.25)).astype(np.float32),
            "unknown": rng.normal(0, 0.09, (probes, 128)).astype(np.float32)}


class FullScan:
    """The former ``Matcher.match``, for comparison in the same run: one float32 matrix-vector product over the
    whole gallery, the two best (one template per user here)."""

    def __init__(self, gallery: Gallery) -> None:
        self.matrix = np.ascontiguousarray(gallery.matrix, dtype=np.float32)
        self.norms = np.einsum("ij,ij->i", self.matrix, self.matrix)

    def match(self, probe: np.ndarray) -> np.ndarray:
        partial = self.norms - 2 * (self.matrix @ probe)
        two = np.argpartition(partial, 1)[:2]
        return two[np.argsort(partial[two])]


def exact_verdict(gallery: Gallery, probe: np.ndarray, config: FaceConfig) -> tuple[str | None, str]:
    """The brute force's verdict: every template's float64 distance (one template per user here)."""
    d = distances(gallery.matrix, probe, np.arange(len(gallery.owners)))
    first, second = np.argsort(d, kind="stable")[:2]
    v = judge(Match(gallery.owners[first], float(d[first]), gallery.owners[second], float(d[second])),
              config.threshold, config.margin)
    return v.user, v.reason


def bench_match(sizes: list[int], probes: int, checks: int) -> dict[int, dict[str, object]]:
    """Per size: the build (and the matcher's memory beyond the gallery), then per kind of probe the match's
    p50/p99 (and mean CPU time: what load does not inflate) next to the full float32 scan's, timed alternately on
    the same probes, the templates left for the exact distance, the verdicts, and how many of the first ``checks``
    agree with the exact brute force."""
    rng, config = np.random.default_rng(7), FaceConfig()
    out: dict[int, dict[str, object]] = {}
    for size in sizes:
        gallery = bench_gallery(size, rng)
        started = time.perf_counter()
        matcher = Matcher(gallery)
        build = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        full = FullScan(gallery)
        full_build = (time.perf_counter() - started) * 1000
        figures: dict[str, object] = {"build_ms": round(build, 1), "full_scan_build_ms": round(full_build, 1),
                                      "extra_mb": round(matcher.extra_bytes / 2**20, 1)}
        for kind, batch in bench_probes(gallery, probes, rng).items():
            figures[kind] = bench_kind(matcher, full, gallery, batch, checks, config)
        out[size] = figures
    return out


def bench_kind(matcher: Matcher, full: FullScan, gallery: Gallery, batch: np.ndarray, checks: int,
               config: FaceConfig) -> dict[str, object]:
    times, full_times, verdicts, cpu, full_cpu = [], [], {}, 0.0, 0.0
    for probe in batch:
        started, on_cpu = time.perf_counter(), time.thread_time()
        full.match(probe)
        full_times.append((time.perf_counter() - started) * 1000)
        full_cpu += time.thread_time() - on_cpu
        started, on_cpu = time.perf_counter(), time.thread_time()
        match = matcher.match(probe)
        times.append((time.perf_counter() - started) * 1000)
        cpu += time.thread_time() - on_cpu
        reason = judge(match, config.threshold, config.margin).reason
        verdicts[reason] = verdicts.get(reason, 0) + 1
    left = sorted(matcher.candidates(p) for p in batch)
    same = sum(exact_verdict(gallery, p, config) == _verdict(matcher, p, config) for p in batch[:checks])
    return {"p50_ms": round(pct(times, 0.5), 2), "p99_ms": round(pct(times, 0.99), 2),
            "full_scan_p50_ms": round(pct(full_times, 0.5), 2), "full_scan_p99_ms": round(pct(full_times, 0.99), 2),
            "cpu_mean_ms": round(cpu * 1000 / len(batch), 2),
            "full_scan_cpu_mean_ms": round(full_cpu * 1000 / len(batch), 2),
            "exact_templates_p50": left[len(left) // 2], "exact_templates_max": left[-1], "verdicts": verdicts,
            "as_brute_force": f"{same}/{min(checks, len(batch))}"}


def _verdict(matcher: Matcher, probe: np.ndarray, config: FaceConfig) -> tuple[str | None, str]:
    v = judge(matcher.match(probe), config.threshold, config.margin)
    return v.user, v.reason


def error_rates(engine: FaceEngine, threshold: float) -> dict[str, object]:
    encodings = {}
    for name in PHOTOS:
        rgb = decode_photo((photos() / name).read_bytes())
        boxes = engine.locate(rgb)
        encodings[name] = engine.encode(rgb, boxes[:1])[0]
    same, other = [], []
    names = list(encodings)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = float(np.linalg.norm(encodings[a] - encodings[b]))
            (same if a.startswith("obama") == b.startswith("obama") else other).append(d)
    return {"threshold": threshold, "same_pairs": len(same), "false_rejects": sum(d > threshold for d in same),
            "same_max": round(max(same), 3), "other_pairs": len(other),
            "false_accepts": sum(d <= threshold for d in other), "other_min": round(min(other), 3)}


def make_store(folder: Path, users: int, engine: FaceEngine) -> tuple[Path, Path]:
    """A store with ``users`` random users' templates plus the enrolled one (from obama.jpg, obama2.jpg)."""
    key_path = folder / "device.key"
    key = DeviceKey.load_or_create(key_path)
    store = Store(folder / "doorphoned.db")
    store.open()
    faces = FaceStore(store, key)
    rng = np.random.default_rng(3)
    db = store.db
    db.execute("BEGIN")
    db.executemany("INSERT INTO users (id, name, created, updated) VALUES (?, ?, ?, ?)",
                   [(f"u{i:06d}", f"user {i}", NOW.isoformat(), NOW.isoformat()) for i in range(users)])
    db.execute("INSERT INTO users (id, name, created, updated) VALUES ('barack', 'Barack', ?, ?)",
               (NOW.isoformat(), NOW.isoformat()))
    for i, vector in enumerate(rng.normal(0, 0.09, (users, 128)).astype(np.float32)):
        faces._insert(f"u{i:06d}", tuple(vector.tolist()), "cloud", NOW, (None, None))
    for name in ("obama.jpg", "obama2.jpg"):
        template = enrol_photo(engine, (photos() / name).read_bytes(), QualityLimits()).template
        faces._insert("barack", tuple(template.tolist()), "local", NOW, (None, None))
    db.execute("COMMIT")
    store.close()
    return folder / "doorphoned.db", key_path


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_worker(users: int, presences: int, engine: FaceEngine) -> dict[str, object]:
    from hwsim.camera import image_frame

    config = FaceConfig(enabled=True)
    frame = image_frame(photos() / "obama3.jpg")
    blank = np.full_like(frame, 128)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db, key = make_store(folder, users, engine)
        sock = folder / "frames.sock"
        proc = subprocess.Popen([sys.executable, "-m", "doorphoned.face.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.stdin is not None and proc.stdout is not None
        try:
            started = time.monotonic()
            proc.stdin.write(json.dumps({"op": "configure", "db": str(db), "key": str(key), "socket": str(sock),
                                         "settings": config.worker_settings()}).encode() + b"\n")
            proc.stdin.flush()
            events = iter(proc.stdout.readline, b"")
            loaded: dict[str, object] = {}
            for line in events:
                if not line.startswith(b"{"):
                    print("worker said:", line[:200], file=sys.stderr)
                    continue
                event = json.loads(line)
                if event["ev"] == "templates":
                    loaded = event
                if event["ev"] == "ready":
                    break
            ready_s = time.monotonic() - started
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(sock))
            latencies, decisions = [], []
            seq = 0
            gap = 1.0 / config.max_fps
            for _ in range(presences):
                first = time.monotonic()
                seq = _send_until_match(conn, proc, frame, seq, gap, decisions)
                latencies.append((time.monotonic() - first) * 1000)
                leave = time.monotonic() + 3  # the face leaves: blank frames for 3 s (the presence ends)
                while time.monotonic() < leave:
                    seq += 1
                    _send_when_asked(conn, blank, seq)
            rss = rss_kb(proc.pid)
            proc.stdin.write(b'{"op": "status"}\n')
            proc.stdin.flush()
            stats = next(json.loads(line) for line in events if b'"stats"' in line)
        finally:
            proc.kill()
            proc.wait()
    return {"users": users + 1, "templates": loaded.get("templates"), "load_ms": loaded.get("ms"),
            "ready_s": round(ready_s, 1), "first_frame_to_match_p50_ms": round(pct(latencies, 0.5)),
            "first_frame_to_match_p99_ms": round(pct(latencies, 0.99)),
            "deciding_frame_age_p50_ms": round(pct(decisions, 0.5)),
            "deciding_frame_age_p99_ms": round(pct(decisions, 0.99)),
            "last_frame_ms": stats.get("last_ms"), "worker_rss_mb": round(rss / 1024), "presences": presences}


def _send_when_asked(conn: socket.socket, image: np.ndarray, seq: int) -> None:
    """As the camera's feed does: wait for the worker's request (one byte), then send a fresh frame."""
    if not conn.recv(1):
        raise ConnectionError("the worker closed the frame socket")
    header = json.dumps({"seq": seq, "monotonic": time.monotonic(), "h": image.shape[0], "w": image.shape[1]})
    conn.sendall(header.encode() + b"\n" + image.tobytes())


def _send_until_match(conn: socket.socket, proc: subprocess.Popen[bytes], frame: np.ndarray, seq: int, gap: float,
                      decisions: list[float]) -> int:
    """Frames at the feed's rate until the worker says ``match`` (read without blocking the sender)."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buffer = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seq += 1
        _send_when_asked(conn, frame, seq)
        end = time.monotonic() + gap
        while time.monotonic() < end:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
            buffer += chunk or b""
            for line in buffer.split(b"\n")[:-1]:
                event = json.loads(line)
                if event["ev"] == "match":
                    decisions.append(float(event["age_ms"]))
                    os.set_blocking(proc.stdout.fileno(), True)
                    return seq
            buffer = buffer.split(b"\n")[-1]
            time.sleep(0.01)
    raise TimeoutError("no match within 60 s")


def bench_keypad_while_recognising(presses: int, enabled: bool = True) -> dict[str, object]:
    """The unit with face recognition on and busy (hw-sim's camera alternating two faces, so every frame is new
    and the worker never idles): keypad PIN -> relay energised, and the daemon's RSS."""
    import shutil

    from tests.procs import Daemon, HwSim, wait_for

    home = Path(tempfile.mkdtemp(prefix="bench-face-"))
    faces = home / "faces"
    faces.mkdir()
    for i, name in enumerate(("obama3.jpg", "biden.jpg")):
        shutil.copy(photos() / name, faces / f"{i}.jpg")
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    daemon = Daemon(home / "d", sim, env={
        "DOORPHONED_FACE_ENABLED": str(enabled).lower(), "DOORPHONED_FACE_DOORS": "[2]",
        "DOORPHONED_KEYPAD_DOORS": "[1]", "DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    try:
        daemon.start()
        daemon.ctl("user", "add", "Bench", "--id", "bench-1", "--doors", "1")
        daemon.ctl("pin", "set", "bench-1", input="7351\n")

        def face() -> dict[str, object]:
            found = [f for f in daemon.ctl_json("status")["features"] if f["name"] == "face"]
            return found[0] if found else {"face": "off"}
        wait_for(lambda: face()["face"] in ("ok", "off"), timeout=180, interval=0.5, what="face worker ready")
        sim.cmd("camera", "sequence", str(faces))
        time.sleep(5)
        events = sim.watch()
        control, replies = sim.control()
        daemon.ctl_json("status")
        before = face().get("matches", 0), face().get("unknown_faces", 0)
        times = []
        for _ in range(presses):
            started = time.perf_counter()
            control.sendall(b'{"op": "keypad", "keys": "7351#"}\n')
            replies.readline()
            for wanted in (True, False):
                while True:
                    event = json.loads(events.readline())
                    if event.get("ev") == "relay" and event["relay"] == 1 and event["energised"] is wanted:
                        break
                if wanted:
                    times.append((time.perf_counter() - started) * 1000)
        status = face()
        assert daemon.proc is not None
        rss = rss_kb(daemon.proc.pid)
    finally:
        daemon.kill()
        sim.stop()
    return {"face": enabled, "presses": presses, "keypad_to_relay_p50_ms": round(pct(times, 0.5), 2),
            "keypad_to_relay_p99_ms": round(pct(times, 0.99), 2), "daemon_rss_mb": round(rss / 1024, 1),
            "face_decisions_meanwhile": (status.get("matches", 0) - before[0])  # type: ignore[operator]
            + (status.get("unknown_faces", 0) - before[1])}  # type: ignore[operator]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000", help="templates for the 1:N figures")
    parser.add_argument("--probes", type=int, default=300, help="probes of each kind (match, near-tie, unknown)")
    parser.add_argument("--checks", type=int, default=20, help="probes of each kind checked against the brute force")
    parser.add_argument("--users", default="10000,50000",
                        help="users the worker holds, comma-separated: frame -> decision at each")
    parser.add_argument("--presences", type=int, default=10, help="times the face arrives (frame -> decision)")
    parser.add_argument("--presses", type=int, default=60, help="keypad PINs while recognition runs (0: skip)")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    started = time.perf_counter()
    engine = FaceEngine()
    print(f"engine load: {(time.perf_counter() - started):.1f} s")
    print("enrolment per photo (ms):", json.dumps(bench_enrol(engine)))
    for size, figures in bench_match([int(s) for s in args.sizes.split(",")], args.probes, args.checks).items():
        print(f"1:N matcher build at {size} templates: {figures.pop('build_ms')} ms (full scan's "
              f"{figures.pop('full_scan_build_ms')} ms), memory beyond the gallery {figures.pop('extra_mb')} MB")
        for kind, kind_figures in figures.items():
            print(f"1:N match at {size} templates, {kind} probes ({args.probes}):", json.dumps(kind_figures))
    print("error rates on the test photos:", json.dumps(error_rates(engine, FaceConfig().threshold)))
    for users in (int(u) for u in args.users.split(",")):
        print("worker, frame -> decision:", json.dumps(bench_worker(users, args.presences, engine)))
    if args.presses:
        print("keypad while recognition runs:", json.dumps(bench_keypad_while_recognising(args.presses)))
        print("keypad, face recognition off (same scene):",
              json.dumps(bench_keypad_while_recognising(args.presses, enabled=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
