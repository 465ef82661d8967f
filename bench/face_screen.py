#!/usr/bin/env python3
"""The screen cue's figures (issue 12, docs/face.md "The screen cue"): scores of live, photo and screen faces,
of the real test photos, and where the cue fades as the screen gets finer, further or out of focus.

Frames are what the recognition worker receives: hw-sim's face scenes (``hwsim.faces``, rendered here in-process
at the scene's times, 4 frames a second), 640x480, through JPEG at hw-sim's quality 85 and back; the face found
as the worker finds it (HOG on the frame scaled by 0.5, upsampled once); ``screen_score`` of the face box's grey
at full resolution. For each scene: every frame's score (min / median / max) and the liveness check's figure,
the median over windows of ``--window`` frames (the largest for live faces and photos, the smallest for screens:
the margin to the threshold). The test photos (face_recognition's sdist): each face at the photo's own size and
shown to the camera (scaled into 640x480, JPEG 85). The sweep: the live face replayed on a screen of another
pixel pitch (camera pixels per screen pixel: smaller is a finer screen or one further away), tilt and lens blur.

The machine is shared: timings are printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hw-sim"))

from hwsim import faces  # noqa: E402

from doorphoned.face.engine import FaceEngine  # noqa: E402
from doorphoned.face.liveness import DEFAULTS  # noqa: E402
from doorphoned.face.screen import grey_face, screen_score  # noqa: E402
from tests.facephotos import photos  # noqa: E402

FPS = 4.0
# Pitches under ~0.9 camera pixels are left out: hw-sim's grid is integrated with 4x4 samples a pixel, too few
# for stripes a sixth of a pixel wide (the model would alias by itself and score high: an artefact, not a finding).
SWEEP = ([("pitch", p, 3.0, 0.7) for p in (0.9, 1.1, 1.35, 2.0, 3.0)]
         + [("tilt", 1.35, d, 0.7) for d in (0.0, 10.0, 30.0)]
         + [("blur", 1.35, 3.0, b) for b in (1.0, 1.5, 2.0, 3.0)])


def jpeg(image: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def score_frame(engine: FaceEngine, bgr: np.ndarray) -> float | None:
    """As the worker: HOG at 0.5, the largest face's box at full size, its screen score (None: no face)."""
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    small = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    boxes = engine.locate(small, 1)
    if not boxes:
        return None
    top, right, bottom, left = (round(v / 0.5) for v in boxes[0])
    return screen_score(grey_face(rgb, (top, right, bottom, left)))


def scene_scores(engine: FaceEngine, scene: faces.Scene, frames: int) -> list[float]:
    got = [score_frame(engine, jpeg(scene.frame(i / FPS))) for i in range(frames)]
    return [s for s in got if s is not None]


def windows(scores: list[float], size: int) -> list[float]:
    return [float(np.median(scores[i - size:i])) for i in range(size, len(scores) + 1)] or [float(np.median(scores))]


def scenes(face: faces.FramedFace) -> dict[str, faces.Scene]:
    return {"live": faces.LiveFace(face), "photo": faces.PhotoFace(face, False),
            "photo on a screen": faces.PhotoFace(face, True), "live, replayed on a screen": faces.ScreenLiveFace(face)}


def bench_scenes(engine: FaceEngine, names: list[str], widths: list[int], frames: int, window: int) -> None:
    print("| scene | faces | frames scored | per frame min / median / max | window medians min–max |")
    print("|---|---|---|---|---|")
    pooled: dict[str, list[float]] = {}
    for name in names:
        for width in widths:
            face = faces.framed(photos() / name, width)
            for label, scene in scenes(face).items():
                got = scene_scores(engine, scene, frames)
                med = windows(got, window)
                pooled.setdefault(label, []).extend(med)
                print(f"| {label} | {name} {width} px | {len(got)}/{frames} | {min(got):.1f} / "
                      f"{np.median(got):.1f} / {max(got):.1f} | {min(med):.1f}–{max(med):.1f} |", flush=True)
    print()
    for label, med in pooled.items():
        print(f"all {label}: window medians {min(med):.1f}–{max(med):.1f}")
    threshold = DEFAULTS.screen_threshold
    real = max(*pooled["live"], *pooled["photo"])
    fake = min(*pooled["photo on a screen"], *pooled["live, replayed on a screen"])
    print(f"threshold {threshold}: {threshold / real:.1f}x the highest real face's window median ({real:.1f}), "
          f"the lowest screen's ({fake:.1f}) {fake / threshold:.1f}x the threshold\n")


def bench_photos(engine: FaceEngine) -> None:
    print("| test photo | face at the photo's size | shown to the camera (640x480, JPEG 85) |")
    print("|---|---|---|")
    for path in sorted(photos().glob("*.jpg")):
        photo = cv2.imread(str(path))
        scale = min(640 / photo.shape[1], 480 / photo.shape[0])
        shown = jpeg(cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        cells = []
        for image in (photo, shown):
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            got = [screen_score(grey_face(rgb, box)) for box in engine.locate(rgb, 1)]
            cells.append(", ".join("-" if s is None else f"{s:.1f}" for s in got) or "no face")
        print(f"| {path.name} | {cells[0]} | {cells[1]} |", flush=True)
    print()


def bench_sweep(engine: FaceEngine, frames: int) -> None:
    face = faces.framed(photos() / "obama3.jpg", 200)
    print("| varied | pitch (camera px per screen px) | tilt ° | blur σ px | frames with a face | median score |")
    print("|---|---|---|---|---|---|")
    for what, pitch, degrees, blur in SWEEP:
        scene = faces.ScreenLiveFace(face, faces.Screen(face, pitch, degrees, blur))
        got = scene_scores(engine, scene, frames)
        median = f"{np.median(got):.1f}" if got else "-"
        print(f"| {what} | {pitch} | {degrees:g} | {blur} | {len(got)}/{frames} | {median} |", flush=True)
    print()


def bench_cost(engine: FaceEngine) -> None:
    face = faces.framed(photos() / "obama3.jpg", 200)
    bgr = jpeg(faces.ScreenLiveFace(face).frame(0.0))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    top, right, bottom, left = (round(v / 0.5) for v in engine.locate(
        cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), 1)[0])
    grey = grey_face(rgb, (top, right, bottom, left))
    started = time.perf_counter()
    for _ in range(200):
        screen_score(grey)
    per_ms = (time.perf_counter() - started) / 200 * 1000
    print(f"screen_score on a {grey.shape[1]}x{grey.shape[0]} face box: {per_ms:.2f} ms a frame "
          f"(load average {os.getloadavg()[0]:.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default="obama3.jpg,biden.jpg,obama.jpg", help="faces the scenes are made of")
    parser.add_argument("--widths", default="140,200", help="face widths in the frame, px")
    parser.add_argument("--frames", type=int, default=16, help="frames per scene (4 a second)")
    parser.add_argument("--window", type=int, default=12, help="frames per liveness window")
    parser.add_argument("--sweep-frames", type=int, default=8, help="frames per sweep point (0: no sweep)")
    args = parser.parse_args()
    engine = FaceEngine()
    print(f"# screen cue, {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}\n")
    bench_scenes(engine, args.photos.split(","), [int(w) for w in args.widths.split(",")], args.frames, args.window)
    bench_photos(engine)
    if args.sweep_frames:
        bench_sweep(engine, args.sweep_frames)
    bench_cost(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
