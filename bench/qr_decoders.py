"""QR decoders side by side on the same synthetic camera-like frames, and QR frame -> decision through the daemon.

Frames (640x480, like the door camera's): **easy** = a temp-key QR code of 220 px, rotated up to 15 degrees,
lightly blurred, on sensor noise; **hard** = smaller (130-170 px), blurred (7-9 px kernels), low contrast (95 on 140),
rotated up to 40 degrees; **blank** = noise only. Each decoder sees the same frames; printed per decoder and
kind: correct decodes, p50 / p99 ms. ``QrDecoder`` is what the camera process runs (zxing-cpp, pyzbar only
where zxing saw a symbol it could not read).

Then, through real processes (hw-sim + ``doorphoned --sim``): the time from hw-sim showing a temp key's QR
code to the relay energising, ``--shows`` times, each after a blank scene long enough for the camera to idle.

    python bench/qr_decoders.py --frames 60 --shows 20
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import segno  # noqa: E402
import zxingcpp  # noqa: E402
from camera_idle import camera_status, qr_after_idle  # noqa: E402
from pyzbar import pyzbar  # noqa: E402

from doorphoned.camera.qr import QR_ONLY, QrDecoder, payload_text  # noqa: E402
from tests.procs import Daemon, HwSim, wait_for  # noqa: E402

TEXT = "DPK1:tk-{i}:{pin}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def frame(text: str | None, rng: random.Random, hard: bool) -> np.ndarray:
    picture = np.full((480, 640, 3), 90, np.uint8)
    cv2.randn(picture, (90, 90, 90), (25, 25, 25))
    if text is None:
        return picture
    size = rng.randrange(130, 170) if hard else 220
    dark, light = (95, 140) if hard else (20, 235)
    matrix = np.array(list(segno.make_qr(text, error="m").matrix_iter(border=4)), dtype=np.uint8)
    img = cv2.resize(np.where(matrix == 1, dark, light).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    angle = rng.uniform(-40, 40) if hard else rng.uniform(-15, 15)
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    img = cv2.warpAffine(img, turn, (size, size), borderValue=light)
    blur = rng.choice((7, 9)) if hard else 3
    img = cv2.GaussianBlur(img, (blur, blur), 0)
    x, y = rng.randrange(20, 640 - size - 20), rng.randrange(20, 480 - size - 20)
    picture[y:y + size, x:x + size] = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return picture


def decoders() -> dict[str, Callable[[np.ndarray], list[str]]]:
    aruco: Any = cv2.QRCodeDetectorAruco()

    def with_zxing(image: np.ndarray) -> list[str]:
        return [payload_text(bytes(r.bytes)) for r in zxingcpp.read_barcodes(image, formats=QR_ONLY)]

    def with_pyzbar(image: np.ndarray) -> list[str]:
        return [payload_text(s.data) for s in pyzbar.decode(image, symbols=[pyzbar.ZBarSymbol.QRCODE])]

    def with_aruco(image: np.ndarray) -> list[str]:
        ok, texts, _, _ = aruco.detectAndDecodeMulti(image)
        return [t for t in texts if t] if ok else []

    ours = QrDecoder()
    return {"zxing-cpp": with_zxing, "pyzbar": with_pyzbar, "cv2 QRCodeDetectorAruco": with_aruco,
            "QrDecoder (zxing, pyzbar on undecoded symbols)": ours.decode}


def side_by_side(n: int) -> None:
    rng = random.Random(7)
    kinds: dict[str, list[tuple[np.ndarray, str | None]]] = {"easy": [], "hard": [], "blank": []}
    for i in range(n):
        for kind in ("easy", "hard"):
            text = TEXT.format(i=i, pin=f"{rng.randrange(10**8):08d}")
            kinds[kind].append((np.ascontiguousarray(frame(text, rng, kind == "hard")[:, :, 1]), text))
        kinds["blank"].append((np.ascontiguousarray(frame(None, rng, False)[:, :, 1]), None))
    print(f"QR decoders on {n} frames of each kind (640x480 grey, synthetic camera-like):")
    for name, decode in decoders().items():
        cells = []
        for kind, frames in kinds.items():
            times, correct = [], 0
            for image, text in frames:
                started = time.perf_counter()
                found = decode(image)
                times.append((time.perf_counter() - started) * 1000)
                correct += (text in found) if text else (not found)
            cells.append(f"{kind} {correct}/{len(frames)} p50 {pct(times, 50):.2f} ms p99 {pct(times, 99):.2f} ms")
        print(f"  {name}: " + " | ".join(cells))


def through_the_daemon(shows: int, gap: float) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-qr-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    daemon = Daemon(home / "d", sim, env={"DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    try:
        daemon.start()
        wait_for(lambda: camera_status(daemon).get("camera") == "ok", timeout=60, what="camera up")
        qr_after_idle(daemon, sim, shows, gap)
    finally:
        daemon.kill()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames of each kind per decoder")
    parser.add_argument("--shows", type=int, default=20, help="QR codes shown through the daemon (0: skip)")
    parser.add_argument("--gap", type=float, default=4.0, help="seconds of blank scene before each show")
    args = parser.parse_args()
    side_by_side(args.frames)
    if args.shows:
        through_the_daemon(args.shows, args.gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
